/*
 * persist.h — troupe-bench's persistence workloads (persist.c).
 */
#ifndef TROUPE_BENCH_PERSIST_H
#define TROUPE_BENCH_PERSIST_H

/* 1,000 persistent actors, 1,000,000 events, replies after commit; FULL then NORMAL. */
void bench_persist(unsigned workers, double scale);
/* Recovery of one actor with 1,000,000 events, from the events and from a snapshot. */
void bench_recover(unsigned workers, double scale);

#endif
