/*
 * push_log.c — the development provider: the push is written to the log.
 */
#include <stdlib.h>

#include "log.h"
#include "push.h"

static enum push_result log_send(struct wctx *w, const struct push_msg *m, struct push_out *out)
{
    (void)w;
    (void)out;
    char *body = push_body(m);
    json_t *j = json_loads(body, 0, NULL);
    nlog(LOG_INFO, "push (log provider)", json_pack("{s:o}", "push", j ? j : json_null()));
    free(body);
    return PUSH_OK;
}

const struct push_provider push_log = {"log", NULL, log_send};
