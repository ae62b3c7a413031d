-- ENQUEUE: queue messages to one user outside a turn.
-- KEYS: outbox stream, delayed zset, order hash (of the one user the messages go to)
-- ARGV: conversation_ttl_ms, then (not_before or "", message JSON) pairs
append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], 2, #ARGV)
return 1
