// Register-preservation tests: written next.
