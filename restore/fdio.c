/* Local file writes for restore and archive-get (see fdio.h). */
#include "restore/fdio.h"

#include <errno.h>
#include <unistd.h>

#include "common/mem.h"

int
pd_fdio_write_all(int fd, const void *buf, size_t len, const char *what, pd_err *err)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pd_err_sys(err, PD_EIO, "could not write \"%s\"", what);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

typedef struct fd_sink {
    const int *fd;
    const char *what;
} fd_sink;

static int
sink_write(void *payload, const void *buf, size_t len, pd_err *err)
{
    const fd_sink *s = payload;
    return pd_fdio_write_all(*s->fd, buf, len, s->what, err);
}

static void
sink_free(void *payload)
{
    pd_free(payload);
}

pd_stage *
pd_fdio_sink_new(const int *fd, const char *what)
{
    fd_sink *s = pd_malloc(sizeof(*s));
    pd_stage *st;

    s->fd = fd;
    s->what = what;
    st = pd_stage_sink_new(sink_write, NULL, s);
    pd_stage_set_cleanup(st, sink_free, s);
    return st;
}
