/*
 * version.c — the library's own version (troupe.h, "Version"), compiled from the headers it was
 * built with, so a program can tell which library it runs with at run time.
 */
#include "internal.h"

#define TR_STR_(x) #x
#define TR_STR(x) TR_STR_(x)

unsigned tr_version(void)
{
    return TR_VERSION_HEX;
}

const char *tr_version_string(void)
{
    return TR_STR(TR_VERSION_MAJOR) "." TR_STR(TR_VERSION_MINOR) "." TR_STR(TR_VERSION_PATCH);
}
