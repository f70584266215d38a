"""The context as a tar: header bytes, the (forked) walker's rows, sinks, the writer."""
