"""jaxdepth: depth-estimation networks with every multiplication through an approximate multiplier's table."""
__version__ = "0.1.0"
