"""Pure pandas: DataFrames in, DataFrames out. No I/O, no clock, no Prefect."""
