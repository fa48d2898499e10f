/* store_redis.c — placeholder while the Redis backend is written. */
#include "store_impl.h"

#include <stdio.h>

int tr__store_redis_open(tr_store *s, const tr_store_opts *o, char *err, size_t errlen)
{
    (void)o;
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s: the Redis backend is not built in", s->where);
    return TR_EINVAL;
}
