"""Where the images come from: the registry of datasets, the IDX format, download sources and the fetch."""
