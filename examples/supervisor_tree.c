/*
 * supervisor_tree.c — a supervision tree declared in a config file (examples/supervisor.conf),
 * loaded with troupe::config's tr_sup_tree_load and started with tr_sup_start. The program makes
 * the "counter" child crash: its supervisor restarts it (a new pid, the restart counted); a job is
 * started under the simple_one_for_one "jobs" supervisor; then the counter crashes past the top
 * supervisor's intensity (2 restarts a minute) and the supervisor gives up, ending the tree. The
 * runtime reports the crashes, the restarts and the giving up through the log hook
 * (tr_log_set), which this program prints.
 *
 *   build/bin/example-supervisor-tree [examples/supervisor.conf]
 */
#include <stdio.h>
#include <time.h>
#include <troupe.h>
#include <troupe/config.h>

enum { MSG_CRASH = 1, MSG_WORK };

static int counter_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)ctx;
    if (tr_msg_type(m) == MSG_CRASH)
        return TR_EINVAL; /* non-zero: the actor fails, its supervisor acts */
    (*(uint64_t *)state)++;
    return TR_OK;
}

static int job_init(tr_ctx *ctx, void *state, const void *arg)
{
    (void)state;
    printf("  job %s started as %#llx\n", (const char *)arg, (unsigned long long)tr_self(ctx));
    return TR_OK;
}

static int job_receive(tr_ctx *ctx, void *state, tr_msg *m)
{
    (void)state;
    (void)m;
    tr_stop(ctx); /* one piece of work, then a normal end (temporary: not restarted) */
    return TR_OK;
}

static const tr_behaviour counter_b = {
    .name = "counter", .state_size = sizeof(uint64_t), .receive = counter_receive};
static const tr_behaviour job_b = {.name = "job", .init = job_init, .receive = job_receive};

/* the runtime's log lines (a supervisor's reports among them), as they come */
static void print_log(void *user, tr_log_level level, const char *component, const char *line)
{
    (void)user;
    static const char *const names[] = {"error", "warn", "info", "debug"};
    printf("  [log %s %s] %s\n", names[level < 4 ? level : 3], component, line);
}

/* Waits (10 ms steps, 10 s at most) until the child `id` of sup runs with a pid other than old. */
static int wait_restarted(tr_system *sys, tr_pid sup, const char *id, tr_pid old, tr_pid *out)
{
    for (int i = 0; i < 1000; i++) {
        if (tr_sup_which_child(sys, sup, id, out) == TR_OK && *out != old)
            return TR_OK;
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
    return TR_ETIMEDOUT;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : EXAMPLES_DIR "/supervisor.conf";
    const tr_behaviour *const behaviours[] = {&counter_b, &job_b};
    char err[256];
    tr_sup_tree *tree;
    int rc = tr_sup_tree_load(path, "supervisor", behaviours, 2, &tree, err, sizeof err);
    if (rc != TR_OK) {
        fprintf(stderr, "supervisor_tree: %s\n", err);
        return 1;
    }
    tr_log_set(print_log, NULL, TR_LOG_INFO);
    tr_system *sys;
    tr_pid top = 0, counter = 0, jobs = 0, job = 0;
    uint64_t running = 0, restarts = 0;
    rc = tr_system_new(&sys, NULL);
    if (rc == TR_OK)
        rc = tr_system_start(sys);
    if (rc == TR_OK)
        rc = tr_sup_start(sys, tr_sup_tree_spec(tree), &top);
    if (rc == TR_OK)
        rc = tr_sup_which_child(sys, top, "counter", &counter);
    printf("the tree is up: top %#llx, counter %#llx\n", (unsigned long long)top,
           (unsigned long long)counter);

    /* a crash, and the restart */
    if (rc == TR_OK)
        rc = tr_system_send(sys, counter, tr_msg_new(MSG_CRASH, 0));
    tr_pid old = counter;
    if (rc == TR_OK)
        rc = wait_restarted(sys, top, "counter", old, &counter);
    if (rc == TR_OK)
        rc = tr_sup_count(sys, top, &running, &restarts);
    printf("the counter crashed and was restarted: %#llx -> %#llx (%llu restart)\n",
           (unsigned long long)old, (unsigned long long)counter, (unsigned long long)restarts);

    /* a job under the simple_one_for_one supervisor */
    if (rc == TR_OK)
        rc = tr_sup_which_child(sys, top, "jobs", &jobs);
    if (rc == TR_OK)
        rc = tr_sup_start_child(sys, jobs, "resize-images", sizeof "resize-images", &job);
    if (rc == TR_OK)
        rc = tr_system_send(sys, job, tr_msg_new(MSG_WORK, 0));

    /* two more crashes: past the intensity, the top supervisor gives up and the tree ends */
    for (int i = 0; rc == TR_OK && i < 2; i++) {
        old = counter;
        rc = tr_system_send(sys, counter, tr_msg_new(MSG_CRASH, 0));
        if (rc == TR_OK && i == 0)
            rc = wait_restarted(sys, top, "counter", old, &counter);
    }
    int waited = 0;
    while (rc == TR_OK && tr_system_alive(sys, top) && waited++ < 1000)
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    bool gave_up = rc == TR_OK && !tr_system_alive(sys, top);
    printf("the top supervisor %s\n", gave_up ? "gave up (intensity reached)" : "is still up");

    tr_system_stop(sys);
    tr_system_join(sys);
    tr_system_free(sys);
    tr_sup_tree_free(tree);
    tr_log_set(NULL, NULL, TR_LOG_INFO);
    if (rc != TR_OK)
        fprintf(stderr, "supervisor_tree: %s\n", tr_strerror(rc));
    return rc == TR_OK && restarts == 1 && gave_up ? 0 : 1;
}
