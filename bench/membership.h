/*
 * membership.h — `troupe-bench membership-sim` (membership.c): the membership core in a
 * simulated network of N nodes, with its own options (it takes the rest of the command line).
 */
#ifndef TROUPE_BENCH_MEMBERSHIP_H
#define TROUPE_BENCH_MEMBERSHIP_H

/* argv[0] is "membership-sim"; returns the process's exit status. */
int bench_membership_sim(int argc, char **argv);

#endif
