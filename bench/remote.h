/*
 * remote.h — troupe-bench's two-process workloads (remote.c).
 */
#ifndef TROUPE_BENCH_REMOTE_H
#define TROUPE_BENCH_REMOTE_H

/* 100,000 round trips between an actor and an echo on another node (process). */
void bench_remote_pingpong(unsigned workers, double scale);
/* 1,000,000 messages of 64 bytes one way to a sink on another node (process). */
void bench_remote_throughput(unsigned workers, double scale);
/* 1,000,000 calls (request/reply, 5 s timeout) by 100 actors to 10 servers on another node. */
void bench_remote_call(unsigned workers, double scale);
/* The second process: serves node "bench-b" until SIGTERM (troupe-bench --serve-node W
 * [--tls DIR]). */
int bench_serve_node(unsigned workers);
/* Both nodes over TLS (mutual), with the certificates of scripts/make-certs DIR: ca.pem, n1 (this
 * process, bench-a), n2 (bench-b). NULL: plain TCP (the default). */
void bench_remote_tls(const char *dir);

#endif
