# The protocol both sides speak: frames, messages, the record batch format, the partitioner and the error table.
# Must not import trio, open sockets or touch files.
