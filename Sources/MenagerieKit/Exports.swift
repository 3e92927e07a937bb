// What `import MenagerieKit` brings along: the data types every plugin touches.
@_exported import Formats
@_exported import Tensors
