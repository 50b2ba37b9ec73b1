# The thin Trio layer: listeners, one task per connection, waiting (long polls), the one timer task, fsync in a
# worker thread. All decisions are the cores'.
