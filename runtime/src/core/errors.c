/*
 * errors.c — tr_strerror: the text of every TR_E* code.
 */
#include "troupe.h"

const char *tr_strerror(int err)
{
    switch (err) {
    case TR_OK: return "success";
    case TR_ENOMEM: return "out of memory";
    case TR_EINVAL: return "invalid argument";
    case TR_ENOPROC: return "no such actor";
    case TR_ETIMEDOUT: return "timed out";
    case TR_ESTOPPED: return "system is stopping or stopped";
    case TR_EBADMSG: return "malformed or unexpected message payload";
    case TR_ESTATE: return "operation not valid in the current state";
    case TR_ETOOBIG: return "size limit exceeded";
    case TR_EFULL: return "queue is full";
    case TR_EINTENSITY: return "restart intensity exceeded";
    case TR_EEXIST: return "name already taken";
    case TR_EIO: return "I/O error";
    case TR_ENOCONN: return "no connection to the actor's node";
    default: return "unknown error";
    }
}
