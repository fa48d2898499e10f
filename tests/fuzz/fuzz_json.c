/*
 * fuzz_json.c — libFuzzer harness for the strict JSON reader of the web unit (troupe/json.h):
 * what any HTTP client can send as a body. tr_json_parse must refuse invalid UTF-8, NUL, duplicate
 * keys, deep nesting and trailing data with a message, and never read out of bounds; a document
 * it accepts is printed back (cJSON) and parsed again, which must succeed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <troupe/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[128];
    cJSON *j = tr_json_parse((const char *)data, size, why, sizeof why);
    if (j == NULL) {
        if (why[0] == '\0')
            abort(); /* a refusal always says why */
        return 0;
    }
    char *text = cJSON_PrintUnformatted(j);
    if (text != NULL) {
        cJSON *again = tr_json_parse(text, strlen(text), why, sizeof why);
        if (again == NULL)
            abort(); /* what we accepted and printed must read back */
        cJSON_Delete(again);
        free(text);
    }
    cJSON_Delete(j);
    return 0;
}
