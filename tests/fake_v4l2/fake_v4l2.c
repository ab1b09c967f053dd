/*
 * A fake V4L2 camera at the libc boundary, for end-to-end tests of the node's V4L2 source
 * without a camera or v4l2loopback (tests/python/test_fake_camera.py builds and uses it).
 *
 *   gcc -shared -fPIC -O2 -o fake_v4l2.so tests/fake_v4l2/fake_v4l2.c -ldl
 *   FAKE_V4L2_DEVICE=/tmp/x/video0 LD_PRELOAD=./fake_v4l2.so dinov3_perception run \
 *       --source v4l2:/tmp/x/video0 --pixel-format yuyv --width 320 --height 240
 *
 * FAKE_V4L2_DEVICE names a placeholder file (it must exist: the node canonicalises the path).
 * Opening exactly that file hands out a fake descriptor (an eventfd, so it is a real, closable
 * fd) that behaves as a UVC camera streaming YUYV through memory-mapped buffers; every other
 * open, ioctl, mmap, poll and close passes through to libc.
 *
 *   FAKE_V4L2_SIZE=WxH          the one frame size offered (default 320x240)
 *   FAKE_V4L2_FPS=N             the one frame rate offered (default 30)
 *   FAKE_V4L2_ERROR_FRAMES=a,b  frames (counted over the whole process, from 0) delivered with
 *                               V4L2_BUF_FLAG_ERROR
 *   FAKE_V4L2_SHORT_FRAMES=c,d  frames delivered with half the image (bytesused too small)
 *
 * Unplug: delete the placeholder. An open descriptor then dies for good, as a real unplugged
 * camera's does: poll reports POLLERR|POLLHUP, every ioctl and mmap fails with ENODEV. Opening
 * the path fails with ENOENT (the file is missing). Replug: create the placeholder again; the
 * next open gets a new camera whose sequence numbers start at 0.
 *
 * Buffers are filled as a driver fills them: one frame every 1/fps after STREAMON, into the
 * oldest queued buffer; a frame that finds no queued buffer is dropped (a gap in the sequence).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_FAKES 8
#define MAX_BUFFERS 32
#define MAX_LISTED 16
#define CHECK_SLICE_NS 10000000LL /* how often a blocked poll looks for an unplug: 10 ms */

/* ---- libc ------------------------------------------------------------------------------- */

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_ioctl)(int, unsigned long, ...);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off64_t);
static int (*real_munmap)(void *, size_t);
static int (*real_poll)(struct pollfd *, nfds_t, int);
static int (*real_close)(int);

static void *next_symbol(const char *name) {
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "fake_v4l2: dlsym(%s) failed: %s\n", name, dlerror());
        abort();
    }
    return f;
}

static void resolve(void) {
    /* Idempotent, so a benign race between threads at start-up is harmless. */
    if (real_close) return;
    real_open = next_symbol("open");
    real_open64 = next_symbol("open64");
    real_openat = next_symbol("openat");
    real_openat64 = next_symbol("openat64");
    real_ioctl = next_symbol("ioctl");
    real_mmap = next_symbol("mmap");
    real_mmap64 = next_symbol("mmap64");
    real_munmap = next_symbol("munmap");
    real_poll = next_symbol("poll");
    real_close = next_symbol("close");
}

/* ---- settings --------------------------------------------------------------------------- */

static pthread_once_t settings_once = PTHREAD_ONCE_INIT;
static char device_path[PATH_MAX]; /* FAKE_V4L2_DEVICE as given; empty: no fake device */
static char device_dir[PATH_MAX];  /* its directory, canonical */
static char device_base[NAME_MAX + 1];
static uint32_t cam_width = 320, cam_height = 240, cam_fps = 30;
static long long error_frames[MAX_LISTED], short_frames[MAX_LISTED];
static int n_error_frames, n_short_frames;

static int parse_list(const char *s, long long *out) {
    int n = 0;
    while (s && *s && n < MAX_LISTED) {
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s) break;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static void load_settings(void) {
    const char *p = getenv("FAKE_V4L2_DEVICE");
    if (p && *p && strlen(p) < sizeof device_path) {
        strcpy(device_path, p);
        char dir[PATH_MAX];
        strcpy(dir, p);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        if (strlen(base) <= NAME_MAX) strcpy(device_base, base);
        if (slash == dir) dir[1] = '\0';
        else if (slash) *slash = '\0';
        else strcpy(dir, ".");
        /* The directory stays while the file comes and goes: canonicalise it once. */
        if (!realpath(dir, device_dir)) device_path[0] = '\0';
    }
    const char *size = getenv("FAKE_V4L2_SIZE");
    unsigned w, h;
    if (size && sscanf(size, "%ux%u", &w, &h) == 2 && w >= 2 && h >= 1 && w % 2 == 0) {
        cam_width = w;
        cam_height = h;
    }
    const char *fps = getenv("FAKE_V4L2_FPS");
    if (fps && atoi(fps) > 0) cam_fps = (uint32_t)atoi(fps);
    n_error_frames = parse_list(getenv("FAKE_V4L2_ERROR_FRAMES"), error_frames);
    n_short_frames = parse_list(getenv("FAKE_V4L2_SHORT_FRAMES"), short_frames);
}

static int listed(const long long *list, int n, long long v) {
    for (int i = 0; i < n; i++)
        if (list[i] == v) return 1;
    return 0;
}

static uint32_t size_image(void) { return cam_width * cam_height * 2; }
static uint32_t bytes_per_line(void) { return cam_width * 2; }
/* Buffer offsets are page-aligned, as mmap needs. */
static size_t buffer_stride(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (size_image() + page - 1) / page * page;
}

/* Is `path` the placeholder? Compared canonically (a symlink to it counts). */
static int is_device_path(const char *path) {
    pthread_once(&settings_once, load_settings);
    if (!device_path[0] || !path) return 0;
    if (strcmp(path, device_path) == 0) return 1;
    /* Any other path may still lead to it (a symlink, "./", ".."): compare canonically. A
     * missing placeholder does not resolve, so the open passes through and fails ENOENT. */
    char resolved[PATH_MAX];
    if (!realpath(path, resolved)) return 0;
    char want[PATH_MAX + NAME_MAX + 2];
    snprintf(want, sizeof want, "%s/%s", strcmp(device_dir, "/") == 0 ? "" : device_dir,
             device_base);
    return strcmp(resolved, want) == 0;
}

static int device_present(void) {
    struct stat st;
    return stat(device_path, &st) == 0;
}

/* ---- the fake cameras ------------------------------------------------------------------- */

enum buffer_state { DEQUEUED, QUEUED, DONE };

struct buffer {
    enum buffer_state state;
    void *addr; /* where the program mapped it, NULL if not mapped */
    size_t len;
    uint32_t bytesused, flags, sequence;
    struct timeval timestamp;
    uint64_t order; /* FIFO order among queued / done buffers */
};

struct fake {
    int fd; /* -1: free slot */
    int nonblock;
    int gone; /* unplugged: stays dead even if the file comes back */
    int streaming;
    uint32_t count;
    struct buffer buf[MAX_BUFFERS];
    uint64_t order;
    struct timespec stream_start;
    long long next_tick; /* index of the next frame the sensor produces */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake fakes[MAX_FAKES] = {[0 ... MAX_FAKES - 1] = {.fd = -1}};
static long long frames_delivered; /* over the whole process: FAKE_V4L2_*_FRAMES count these */

static struct fake *find(int fd) {
    if (fd < 0) return NULL;
    for (int i = 0; i < MAX_FAKES; i++)
        if (fakes[i].fd == fd) return &fakes[i];
    return NULL;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long frame_period_ns(void) { return 1000000000LL / cam_fps; }

static long long tick_time_ns(const struct fake *f, long long tick) {
    return f->stream_start.tv_sec * 1000000000LL + f->stream_start.tv_nsec +
           tick * frame_period_ns();
}

static void fill_pattern(uint8_t *p, long long frame) {
    /* A diagonal ramp moving 4 pixels a frame, neutral chroma. */
    for (uint32_t y = 0; y < cam_height; y++) {
        uint8_t *row = p + (size_t)y * bytes_per_line();
        for (uint32_t x = 0; x < cam_width; x += 2) {
            row[2 * x + 0] = (uint8_t)(16 + ((x + y + frame * 4) & 0xbf));
            row[2 * x + 1] = 128;
            row[2 * x + 2] = (uint8_t)(16 + ((x + 1 + y + frame * 4) & 0xbf));
            row[2 * x + 3] = 128;
        }
    }
}

static struct buffer *oldest(struct fake *f, enum buffer_state state) {
    struct buffer *best = NULL;
    for (uint32_t i = 0; i < f->count; i++)
        if (f->buf[i].state == state && (!best || f->buf[i].order < best->order))
            best = &f->buf[i];
    return best;
}

/* Looks for an unplug, then lets the sensor produce every frame due by now. Call locked. */
static void advance(struct fake *f) {
    if (!f->gone && !device_present()) f->gone = 1;
    if (f->gone || !f->streaming) return;
    long long now = now_ns();
    long long due = (now - tick_time_ns(f, 0)) / frame_period_ns() + 1; /* ticks 0..due-1 */
    if (due - f->next_tick > MAX_BUFFERS) f->next_tick = due - MAX_BUFFERS; /* long stall */
    for (; f->next_tick < due; f->next_tick++) {
        struct buffer *b = oldest(f, QUEUED);
        if (!b) continue; /* no buffer queued: the driver drops the frame */
        long long n = frames_delivered++;
        long long t = tick_time_ns(f, f->next_tick);
        if (b->addr) fill_pattern(b->addr, n);
        b->state = DONE;
        b->order = f->order++;
        b->sequence = (uint32_t)f->next_tick;
        b->timestamp.tv_sec = t / 1000000000LL;
        b->timestamp.tv_usec = (t % 1000000000LL) / 1000;
        b->bytesused = listed(short_frames, n_short_frames, n) ? size_image() / 2 : size_image();
        b->flags = V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC | V4L2_BUF_FLAG_TSTAMP_SRC_EOF;
        if (listed(error_frames, n_error_frames, n)) b->flags |= V4L2_BUF_FLAG_ERROR;
    }
}

/* When the next frame is due (ns, CLOCK_MONOTONIC), or -1 if none will come. Call locked. */
static long long next_due(const struct fake *f) {
    if (f->gone || !f->streaming) return -1;
    return tick_time_ns(f, f->next_tick);
}

static short fake_revents(struct fake *f, short events) {
    advance(f);
    if (f->gone) return POLLERR | POLLHUP;
    if (!f->streaming) return POLLERR; /* what vb2 reports when not streaming */
    return oldest(f, DONE) ? (events & (POLLIN | POLLRDNORM)) : 0;
}

static int open_fake(int flags) {
    if (!device_present()) {
        errno = ENOENT;
        return -1;
    }
    int fd = eventfd(0, (flags & O_CLOEXEC) ? EFD_CLOEXEC : 0);
    if (fd < 0) return -1;
    pthread_mutex_lock(&lock);
    struct fake *slot = NULL;
    for (int i = 0; i < MAX_FAKES && !slot; i++)
        if (fakes[i].fd < 0) slot = &fakes[i];
    if (slot) {
        memset(slot, 0, sizeof *slot);
        slot->fd = fd;
        slot->nonblock = (flags & O_NONBLOCK) != 0;
    }
    pthread_mutex_unlock(&lock);
    if (!slot) {
        real_close(fd);
        errno = EMFILE;
        return -1;
    }
    return fd;
}

/* ---- open ------------------------------------------------------------------------------- */

#define MODE_ARG(flags, mode)                                                                  \
    do {                                                                                       \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {                                               \
            va_list ap;                                                                        \
            va_start(ap, flags);                                                               \
            mode = va_arg(ap, mode_t);                                                         \
            va_end(ap);                                                                        \
        }                                                                                      \
    } while (0)

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    resolve();
    if (is_device_path(path)) return open_fake(flags);
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    resolve();
    if (is_device_path(path)) return open_fake(flags);
    return real_open64(path, flags, mode);
}

static int at_device(int dirfd, const char *path) {
    return path && (path[0] == '/' || dirfd == AT_FDCWD) && is_device_path(path);
}

int openat(int dirfd, const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    resolve();
    if (at_device(dirfd, path)) return open_fake(flags);
    return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    resolve();
    if (at_device(dirfd, path)) return open_fake(flags);
    return real_openat64(dirfd, path, flags, mode);
}

int close(int fd) {
    resolve();
    pthread_mutex_lock(&lock);
    struct fake *f = find(fd);
    if (f) f->fd = -1; /* mappings stay valid until munmap, as with a real driver */
    pthread_mutex_unlock(&lock);
    return real_close(fd);
}

/* ---- ioctl ------------------------------------------------------------------------------ */

static void set_pix(struct v4l2_pix_format *pix) {
    memset(pix, 0, sizeof *pix);
    pix->width = cam_width;
    pix->height = cam_height;
    pix->pixelformat = V4L2_PIX_FMT_YUYV;
    pix->field = V4L2_FIELD_NONE;
    pix->bytesperline = bytes_per_line();
    pix->sizeimage = size_image();
    pix->colorspace = V4L2_COLORSPACE_SRGB;
}

static void describe_buffer(const struct fake *f, uint32_t index, struct v4l2_buffer *out) {
    const struct buffer *b = &f->buf[index];
    uint32_t type = out->type;
    memset(out, 0, sizeof *out);
    out->index = index;
    out->type = type;
    out->memory = V4L2_MEMORY_MMAP;
    out->m.offset = (uint32_t)(index * buffer_stride());
    out->length = size_image();
    out->field = V4L2_FIELD_NONE;
    out->flags = b->flags & ~(V4L2_BUF_FLAG_QUEUED | V4L2_BUF_FLAG_DONE | V4L2_BUF_FLAG_MAPPED);
    if (b->addr) out->flags |= V4L2_BUF_FLAG_MAPPED;
    if (b->state == QUEUED) out->flags |= V4L2_BUF_FLAG_QUEUED;
    if (b->state == DONE) out->flags |= V4L2_BUF_FLAG_DONE;
    out->bytesused = b->bytesused;
    out->sequence = b->sequence;
    out->timestamp = b->timestamp;
}

static void stream_off(struct fake *f) {
    f->streaming = 0;
    for (uint32_t i = 0; i < f->count; i++) f->buf[i].state = DEQUEUED;
}

/* The fake camera's answer to `request`: 0 or an errno. Call locked. */
static int fake_ioctl(struct fake *f, unsigned long request, void *arg) {
    if (!f->gone && !device_present()) f->gone = 1;
    if (f->gone) return ENODEV; /* video_is_registered() is false: every ioctl fails */
    if (!arg) return EFAULT;
    switch (request) {
    case VIDIOC_QUERYCAP: {
        struct v4l2_capability *cap = arg;
        memset(cap, 0, sizeof *cap);
        strcpy((char *)cap->driver, "fake_v4l2");
        strcpy((char *)cap->card, "Fake V4L2 Camera");
        strcpy((char *)cap->bus_info, "platform:fake_v4l2");
        cap->version = (6 << 16) | (8 << 8);
        cap->device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        cap->capabilities = cap->device_caps | V4L2_CAP_DEVICE_CAPS;
        return 0;
    }
    case VIDIOC_ENUM_FMT: {
        struct v4l2_fmtdesc *d = arg;
        if (d->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || d->index != 0) return EINVAL;
        uint32_t index = d->index, type = d->type;
        memset(d, 0, sizeof *d);
        d->index = index;
        d->type = type;
        strcpy((char *)d->description, "YUYV 4:2:2");
        d->pixelformat = V4L2_PIX_FMT_YUYV;
        return 0;
    }
    case VIDIOC_ENUM_FRAMESIZES: {
        struct v4l2_frmsizeenum *s = arg;
        if (s->index != 0 || s->pixel_format != V4L2_PIX_FMT_YUYV) return EINVAL;
        s->type = V4L2_FRMSIZE_TYPE_DISCRETE;
        s->discrete.width = cam_width;
        s->discrete.height = cam_height;
        return 0;
    }
    case VIDIOC_ENUM_FRAMEINTERVALS: {
        struct v4l2_frmivalenum *iv = arg;
        if (iv->index != 0 || iv->pixel_format != V4L2_PIX_FMT_YUYV || iv->width != cam_width ||
            iv->height != cam_height)
            return EINVAL;
        iv->type = V4L2_FRMIVAL_TYPE_DISCRETE;
        iv->discrete.numerator = 1;
        iv->discrete.denominator = cam_fps;
        return 0;
    }
    case VIDIOC_G_FMT:
    case VIDIOC_S_FMT:
    case VIDIOC_TRY_FMT: {
        struct v4l2_format *fmt = arg;
        if (fmt->type != V4L2_BUF_TYPE_VIDEO_CAPTURE) return EINVAL;
        /* One size and format: the driver adjusts any request to it. */
        if (request == VIDIOC_S_FMT && f->count > 0) return EBUSY;
        set_pix(&fmt->fmt.pix);
        return 0;
    }
    case VIDIOC_G_PARM:
    case VIDIOC_S_PARM: {
        struct v4l2_streamparm *p = arg;
        if (p->type != V4L2_BUF_TYPE_VIDEO_CAPTURE) return EINVAL;
        memset(&p->parm, 0, sizeof p->parm);
        p->parm.capture.capability = V4L2_CAP_TIMEPERFRAME;
        p->parm.capture.timeperframe.numerator = 1;
        p->parm.capture.timeperframe.denominator = cam_fps;
        p->parm.capture.readbuffers = 0;
        return 0;
    }
    case VIDIOC_REQBUFS: {
        struct v4l2_requestbuffers *r = arg;
        if (r->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || r->memory != V4L2_MEMORY_MMAP) return EINVAL;
        if (f->streaming) return EBUSY;
        uint32_t count = r->count;
        if (count > MAX_BUFFERS) count = MAX_BUFFERS;
        if (count > 0 && count < 2) count = 2;
        memset(f->buf, 0, sizeof f->buf);
        f->count = count;
        r->count = count;
        r->capabilities = V4L2_BUF_CAP_SUPPORTS_MMAP;
        return 0;
    }
    case VIDIOC_QUERYBUF: {
        struct v4l2_buffer *b = arg;
        if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->index >= f->count) return EINVAL;
        describe_buffer(f, b->index, b);
        return 0;
    }
    case VIDIOC_QBUF: {
        struct v4l2_buffer *b = arg;
        if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->memory != V4L2_MEMORY_MMAP ||
            b->index >= f->count || f->buf[b->index].state != DEQUEUED)
            return EINVAL;
        advance(f); /* frames due before this buffer came back found it missing */
        struct buffer *buf = &f->buf[b->index];
        buf->state = QUEUED;
        buf->order = f->order++;
        buf->flags = 0;
        describe_buffer(f, b->index, b);
        return 0;
    }
    case VIDIOC_DQBUF: {
        struct v4l2_buffer *b = arg;
        if (b->type != V4L2_BUF_TYPE_VIDEO_CAPTURE || b->memory != V4L2_MEMORY_MMAP) return EINVAL;
        if (!f->streaming) return EINVAL;
        advance(f);
        if (f->gone) return ENODEV;
        struct buffer *done = oldest(f, DONE);
        if (!done) {
            if (f->nonblock || !oldest(f, QUEUED)) return EAGAIN;
            /* A blocking DQBUF waits for the next frame; unlock while sleeping. */
            for (;;) {
                long long due = next_due(f);
                if (due < 0) return f->gone ? ENODEV : EINVAL;
                long long wait = due - now_ns();
                if (wait > CHECK_SLICE_NS) wait = CHECK_SLICE_NS;
                if (wait > 0) {
                    struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
                    pthread_mutex_unlock(&lock);
                    nanosleep(&ts, NULL);
                    pthread_mutex_lock(&lock);
                }
                advance(f);
                if (f->gone) return ENODEV;
                if ((done = oldest(f, DONE))) break;
            }
        }
        done->state = DEQUEUED;
        describe_buffer(f, (uint32_t)(done - f->buf), b);
        return 0;
    }
    case VIDIOC_STREAMON:
    case VIDIOC_STREAMOFF: {
        const int *type = arg;
        if (*type != V4L2_BUF_TYPE_VIDEO_CAPTURE) return EINVAL;
        if (request == VIDIOC_STREAMOFF) {
            stream_off(f);
            return 0;
        }
        if (f->count == 0) return EINVAL;
        if (!f->streaming) {
            f->streaming = 1;
            clock_gettime(CLOCK_MONOTONIC, &f->stream_start);
            f->next_tick = 1; /* the first frame comes one period after STREAMON */
        }
        return 0;
    }
    case VIDIOC_ENUMINPUT: {
        struct v4l2_input *in = arg;
        if (in->index != 0) return EINVAL;
        memset(in, 0, sizeof *in);
        strcpy((char *)in->name, "Camera 1");
        in->type = V4L2_INPUT_TYPE_CAMERA;
        return 0;
    }
    case VIDIOC_G_INPUT:
        *(int *)arg = 0;
        return 0;
    case VIDIOC_S_INPUT:
        return *(const int *)arg == 0 ? 0 : EINVAL;
    default:
        /* Controls, menus, outputs, ...: this camera has none. Not a V4L2 ioctl at all:
         * ENOTTY, as the kernel answers. */
        return ((request >> 8) & 0xff) == 'V' ? EINVAL : ENOTTY;
    }
}

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    resolve();
    pthread_mutex_lock(&lock);
    struct fake *f = find(fd);
    if (!f) {
        pthread_mutex_unlock(&lock);
        return real_ioctl(fd, request, arg);
    }
    int e = fake_ioctl(f, request, arg);
    pthread_mutex_unlock(&lock);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

/* ---- mmap ------------------------------------------------------------------------------- */

/* NULL (errno set) if fd is a fake camera that refuses; `*handled` says whether it was one. */
static void *fake_mmap(size_t len, int prot, int flags, int fd, long long offset, int *handled) {
    pthread_mutex_lock(&lock);
    struct fake *f = find(fd);
    *handled = f != NULL;
    if (!f) {
        pthread_mutex_unlock(&lock);
        return NULL;
    }
    int e = 0;
    uint32_t index = 0;
    if (!f->gone && !device_present()) f->gone = 1;
    if (f->gone) e = ENODEV;
    else if (!(flags & MAP_SHARED) || offset < 0 || offset % (long long)buffer_stride() != 0)
        e = EINVAL;
    else {
        index = (uint32_t)(offset / (long long)buffer_stride());
        if (index >= f->count || len > size_image() || len == 0) e = EINVAL;
    }
    void *p = MAP_FAILED;
    if (!e) {
        p = real_mmap(NULL, len, prot, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) e = errno;
        else {
            f->buf[index].addr = p;
            f->buf[index].len = len;
        }
    }
    pthread_mutex_unlock(&lock);
    if (e) errno = e;
    return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t offset) {
    resolve();
    int handled;
    void *p = fake_mmap(len, prot, flags, fd, offset, &handled);
    return handled ? p : real_mmap(addr, len, prot, flags, fd, offset);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t offset) {
    resolve();
    int handled;
    void *p = fake_mmap(len, prot, flags, fd, offset, &handled);
    return handled ? p : real_mmap64(addr, len, prot, flags, fd, offset);
}

int munmap(void *addr, size_t len) {
    resolve();
    pthread_mutex_lock(&lock);
    /* Forget the buffer, also one of a camera already closed (its slot may be reused). */
    for (int i = 0; i < MAX_FAKES; i++)
        for (uint32_t j = 0; j < MAX_BUFFERS; j++)
            if (fakes[i].buf[j].addr == addr) fakes[i].buf[j].addr = NULL;
    pthread_mutex_unlock(&lock);
    return real_munmap(addr, len);
}

/* ---- poll ------------------------------------------------------------------------------- */

int poll(struct pollfd *fds, nfds_t nfds, int timeout) {
    resolve();
    int any_fake = 0;
    pthread_mutex_lock(&lock);
    for (nfds_t i = 0; i < nfds && !any_fake; i++) any_fake = find(fds[i].fd) != NULL;
    pthread_mutex_unlock(&lock);
    if (!any_fake) return real_poll(fds, nfds, timeout);

    /* The other descriptors go to the real poll, fake ones are answered here; wait in slices
     * until something is ready, a frame is due, or the timeout passes. */
    long long deadline = timeout < 0 ? -1 : now_ns() + timeout * 1000000LL;
    struct pollfd others[64];
    nfds_t where[64];
    for (;;) {
        int ready = 0;
        long long wake = -1;
        nfds_t n_others = 0;
        pthread_mutex_lock(&lock);
        for (nfds_t i = 0; i < nfds; i++) {
            struct fake *f = find(fds[i].fd);
            fds[i].revents = 0;
            if (f) {
                fds[i].revents = fake_revents(f, fds[i].events);
                long long due = next_due(f);
                if (due >= 0 && (wake < 0 || due < wake)) wake = due;
                if (fds[i].revents) ready++;
            } else if (n_others < 64) {
                others[n_others] = fds[i];
                others[n_others].revents = 0;
                where[n_others++] = i;
            }
        }
        pthread_mutex_unlock(&lock);
        long long now = now_ns();
        long long wait = ready ? 0 : CHECK_SLICE_NS;
        if (!ready && wake >= 0 && wake - now < wait) wait = wake > now ? wake - now : 0;
        if (!ready && deadline >= 0 && deadline - now < wait) wait = deadline > now ? deadline - now : 0;
        if (n_others > 0) {
            int r = real_poll(others, n_others, (int)((wait + 999999) / 1000000));
            if (r < 0) return -1;
            for (nfds_t k = 0; k < n_others; k++) {
                fds[where[k]].revents = others[k].revents;
                if (others[k].revents) ready++;
            }
        } else if (wait > 0) {
            struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
            nanosleep(&ts, NULL);
        }
        if (ready) return ready;
        if (deadline >= 0 && now_ns() >= deadline) return 0;
    }
}
