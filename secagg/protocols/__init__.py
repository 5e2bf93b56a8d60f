"""Sans-I/O protocol cores: ``masking`` (SecAgg / SecAgg+) and ``paillier``."""
