-- ENQUEUE: queue messages to one user outside a turn, and add them to the user's transcript.
-- KEYS: outbox stream, delayed zset, conversation hash (its send order), transcript stream
--       (of the one user the messages go to)
-- ARGV: 1 conversation_ttl_ms, 2 transcript length, 3 transcript_ttl_ms, 4 ntr, then ntr
--       transcript entries (JSON), then (not_before or "", message JSON) pairs
local ntr = tonumber(ARGV[4])
record(KEYS[4], ARGV[2], ARGV[3], 5, 4 + ntr)
append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], 5 + ntr, #ARGV)
return 1
