module weftpeers

go 1.19
