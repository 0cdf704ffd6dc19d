"""clumptool: volunteer clicks -> consensus clumps -> Zoobot Faster R-CNN -> active learning."""

__version__ = "0.1.0"
