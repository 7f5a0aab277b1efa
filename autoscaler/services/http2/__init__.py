"""A lean gRPC-over-HTTP/2 server on asyncio, for the external scaler's hot path.

grpc.aio hands every call across several threads (its poller, the completion queue,
the event loop); on a small VM those context switches cost more CPU than the answer
itself. This server parses HTTP/2 in the event loop's own thread, answers a call whose
snapshot is ready without creating a task, and writes every answer produced by one
read in a single send. docs/grpc.md compares the two servers.
"""
