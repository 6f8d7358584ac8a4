/*
 * request.c — what a handler reads from its request (path params, query,
 * headers), the resources that live as long as the request, and long-poll
 * suspension.
 */
#include <stdlib.h>

#include "http.h"
#include "tx.h"
#include "util.h"

void req_defer(struct req *r, void (*fn)(void *), void *ptr)
{
    if (!ptr)
        return;
    if (r->ndefers == r->cap_defers) {
        r->cap_defers = r->cap_defers ? r->cap_defers * 2 : 8;
        r->defers = xrealloc(r->defers, r->cap_defers * sizeof *r->defers);
    }
    r->defers[r->ndefers++] = (struct deferred){fn, ptr};
}

char *req_own(struct req *r, char *s)
{
    req_defer(r, free, s);
    return s;
}

static void json_decref_v(void *p)
{
    json_decref(p);
}

json_t *req_own_json(struct req *r, json_t *j)
{
    req_defer(r, json_decref_v, j);
    return j;
}

static void pqclear_v(void *p)
{
    PQclear(p);
}

void req_own_result(struct req *r, PGresult *res)
{
    req_defer(r, pqclear_v, res);
}

const char *req_param(struct req *r, int i)
{
    return i < r->nparams ? r->params[i] : NULL;
}

const char *req_query(struct req *r, const char *k)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, k);
}

const char *req_header(struct req *r, const char *k)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, k);
}

int req_query_int(struct req *r, const char *name, int64_t min, int64_t max, int64_t *out, bool *present)
{
    const char *v = req_query(r, name);
    *present = v != NULL;
    if (!v)
        return 0;
    if (!parse_i64(v, out) || *out < min || *out > max)
        return reply_problem_ext(r, 400, "invalid_parameter", json_pack("{s:s}", "field", name),
                                 "%s must be an integer from %lld to %lld", name, (long long)min, (long long)max);
    return 0;
}

void req_suspend(struct req *r)
{
    req_release_db(r); /* a waiting poll holds no database connection ... */
    /* ... and no query results: thousands of polls wait at once */
    size_t k = 0;
    for (size_t i = 0; i < r->ndefers; i++) {
        if (r->defers[i].fn == pqclear_v)
            PQclear(r->defers[i].ptr);
        else
            r->defers[k++] = r->defers[i];
    }
    r->ndefers = k;
    r->suspended = true;
    MHD_suspend_connection(r->conn);
}

void req_resume(struct req *r)
{
    MHD_resume_connection(r->conn);
}

void req_hand_off(struct req *r)
{
    req_release_db(r);
    r->offloaded = true; /* replies are parked until the connection resumes (http.c) */
    MHD_suspend_connection(r->conn);
}

void req_hand_back(struct req *r)
{
    MHD_resume_connection(r->conn);
}
