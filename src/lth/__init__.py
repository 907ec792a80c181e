"""lth: find, test, study and ship lottery tickets (Frankle & Carbin, ICLR 2019)."""

__version__ = "0.1.0"
