/* The value of the Date header, formatted at most once per second. */
#ifndef LUAGATE_HTTP_DATE_H
#define LUAGATE_HTTP_DATE_H

#include <time.h>

#define HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */

typedef struct gw_http_date {
    time_t sec;
    char text[HTTP_DATE_LEN + 1];
} gw_http_date;

/* Format `now` into d->text unless d already holds that second. */
void http_date_update(gw_http_date *d, time_t now);

#endif
