#include "http_date.h"

void http_date_update(gw_http_date *d, time_t now) {
    if (d->sec == now && d->text[0]) return;
    struct tm tm;
    gmtime_r(&now, &tm);
    /* strftime's %a and %b follow the locale; HTTP wants the C names, so spell them out. */
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char *p = d->text;
    const char *s = days[tm.tm_wday];
    *p++ = s[0], *p++ = s[1], *p++ = s[2], *p++ = ',', *p++ = ' ';
    *p++ = (char)('0' + tm.tm_mday / 10), *p++ = (char)('0' + tm.tm_mday % 10), *p++ = ' ';
    s = months[tm.tm_mon];
    *p++ = s[0], *p++ = s[1], *p++ = s[2], *p++ = ' ';
    int y = tm.tm_year + 1900;
    *p++ = (char)('0' + y / 1000 % 10), *p++ = (char)('0' + y / 100 % 10);
    *p++ = (char)('0' + y / 10 % 10), *p++ = (char)('0' + y % 10), *p++ = ' ';
    *p++ = (char)('0' + tm.tm_hour / 10), *p++ = (char)('0' + tm.tm_hour % 10), *p++ = ':';
    *p++ = (char)('0' + tm.tm_min / 10), *p++ = (char)('0' + tm.tm_min % 10), *p++ = ':';
    *p++ = (char)('0' + tm.tm_sec / 10), *p++ = (char)('0' + tm.tm_sec % 10);
    *p++ = ' ', *p++ = 'G', *p++ = 'M', *p++ = 'T', *p = '\0';
    d->sec = now;
}
