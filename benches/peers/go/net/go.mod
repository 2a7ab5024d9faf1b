module weftnetpeers

go 1.19
