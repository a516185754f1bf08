// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfsx: an fsx-like, model-checked random-operation tester for shiftfs.
 *
 * One file is driven through the shiftfs mount (VIEW) with random writes,
 * reads, truncates, mmap reads and writes, fallocate (plain, keep-size,
 * punch-hole, zero-range, zero-range keep-size) and fsync.  After every
 * operation the touched range and the size are compared with an in-memory
 * model, both through VIEW and through the same file opened directly on
 * the lower filesystem (LOWER); the whole file is compared every -c ops
 * and at the end.
 *
 * Everything random comes from one seeded generator (xorshift64*), so
 * `shiftfsx -s SEED -n N VIEW LOWER` replays a run exactly.  A fallocate
 * mode the filesystem does not support (EOPNOTSUPP) is disabled for the
 * rest of the run and listed in the summary; that decision depends only on
 * the filesystem, so replays stay exact.
 *
 * On a mismatch: the seed, the failing op number, the first differing
 * offset with both bytes, and the last -L ops are printed; exit 1.
 * On success one JSON line is printed on stdout; exit 0.  Exit 2: usage or
 * setup error.
 *
 *   gcc -O2 -Wall -Wextra -Werror -o shiftfsx shiftfsx.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum op {
	OP_READ, OP_WRITE, OP_TRUNCATE, OP_MAPREAD, OP_MAPWRITE,
	OP_FALLOC, OP_KEEPSIZE, OP_PUNCH, OP_ZERO, OP_ZERO_KEEP, OP_FSYNC,
	OP_NR
};

static const char *const op_name[OP_NR] = {
	"read", "write", "truncate", "mapread", "mapwrite", "falloc",
	"falloc_keep_size", "punch_hole", "zero_range", "zero_range_keep",
	"fsync",
};

/* relative weights */
static const int op_weight[OP_NR] = {
	[OP_READ] = 10, [OP_WRITE] = 20, [OP_TRUNCATE] = 8,
	[OP_MAPREAD] = 8, [OP_MAPWRITE] = 10, [OP_FALLOC] = 4,
	[OP_KEEPSIZE] = 4, [OP_PUNCH] = 6, [OP_ZERO] = 4, [OP_ZERO_KEEP] = 4,
	[OP_FSYNC] = 2,
};

struct logent {
	uint64_t n;
	int op;
	uint64_t off, len;
	uint64_t size_after;
	int skipped;
};

static uint64_t rng_state;
static unsigned char *model, *buf, *buf2;
static uint64_t model_size, maxlen;
static uint64_t seed, nops, checkevery = 16;
static int vfd = -1, lfd = -1;
static const char *view_path, *lower_path;
static int disabled[OP_NR];
static uint64_t counts[OP_NR], skipped_counts[OP_NR];
static struct logent *oplog;
static uint64_t loglen = 64, logpos;
static long pagesize;
static int verbose, do_mmap = 1, do_falloc = 1;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static uint64_t rnd_below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static void dump_log(void)
{
	uint64_t first = logpos > loglen ? logpos - loglen : 0;

	fprintf(stderr, "last %" PRIu64 " ops (of %" PRIu64 "):\n",
		logpos - first, logpos);
	for (uint64_t i = first; i < logpos; i++) {
		struct logent *e = &oplog[i % loglen];

		fprintf(stderr, "  #%-6" PRIu64 " %-16s off=0x%-8" PRIx64
			" len=0x%-8" PRIx64 " size->0x%" PRIx64 "%s\n",
			e->n, op_name[e->op], e->off, e->len, e->size_after,
			e->skipped ? " (unsupported, skipped)" : "");
	}
}

__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "shiftfsx: FAIL seed=%" PRIu64 " op=%" PRIu64
		" view=%s lower=%s: ", seed, logpos ? logpos - 1 : 0,
		view_path, lower_path);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	dump_log();
	fprintf(stderr, "replay: shiftfsx -s %" PRIu64 " -n %" PRIu64
		" -m %" PRIu64 "%s%s VIEW LOWER\n", seed, logpos, maxlen,
		do_mmap ? "" : " -M", do_falloc ? "" : " -F");
	exit(1);
}

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "shiftfsx: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void read_all(int fd, const char *who, unsigned char *dst,
		     uint64_t off, uint64_t len)
{
	uint64_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, dst + done, len - done, off + done);

		if (n < 0)
			fail("pread %s off=0x%" PRIx64 " len=0x%" PRIx64 ": %s",
			     who, off + done, len - done, strerror(errno));
		if (n == 0)
			fail("pread %s: short read at 0x%" PRIx64
			     " (model size 0x%" PRIx64 ")", who, off + done,
			     model_size);
		done += n;
	}
}

static void compare_range(uint64_t off, uint64_t len)
{
	struct stat st;
	static const struct { const char *name; int *fd; } side[2] = {
		{ "view", &vfd }, { "lower", &lfd },
	};

	for (int s = 0; s < 2; s++) {
		if (fstat(*side[s].fd, &st))
			fail("fstat %s: %s", side[s].name, strerror(errno));
		if ((uint64_t)st.st_size != model_size)
			fail("%s size 0x%" PRIx64 ", model 0x%" PRIx64,
			     side[s].name, (uint64_t)st.st_size, model_size);
		if (off >= model_size)
			continue;
		if (off + len > model_size)
			len = model_size - off;
		read_all(*side[s].fd, side[s].name, buf2, off, len);
		if (memcmp(buf2, model + off, len)) {
			uint64_t i = 0;

			while (buf2[i] == model[off + i])
				i++;
			fail("%s data differs at 0x%" PRIx64 ": file 0x%02x, "
			     "model 0x%02x", side[s].name, off + i, buf2[i],
			     model[off + i]);
		}
	}
}

static void model_resize(uint64_t newsize)
{
	if (newsize > model_size)
		memset(model + model_size, 0, newsize - model_size);
	model_size = newsize;
}

static void do_write(uint64_t off, uint64_t len)
{
	uint64_t done = 0;

	for (uint64_t i = 0; i < len; i++)
		buf[i] = (unsigned char)rnd();
	while (done < len) {
		ssize_t n = pwrite(vfd, buf + done, len - done, off + done);

		if (n <= 0)
			fail("pwrite off=0x%" PRIx64 " len=0x%" PRIx64 ": %s",
			     off + done, len - done,
			     n < 0 ? strerror(errno) : "wrote 0");
		done += n;
	}
	if (off + len > model_size)
		model_resize(off + len);
	memcpy(model + off, buf, len);
}

static void do_mapread(uint64_t off, uint64_t len)
{
	uint64_t pg = off & ~((uint64_t)pagesize - 1);
	uint64_t mlen = len + (off - pg);
	unsigned char *p;

	p = mmap(NULL, mlen, PROT_READ, MAP_SHARED, vfd, pg);
	if (p == MAP_FAILED)
		fail("mmap read off=0x%" PRIx64 " len=0x%" PRIx64 ": %s", pg,
		     mlen, strerror(errno));
	if (memcmp(p + (off - pg), model + off, len)) {
		uint64_t i = 0;

		while (p[off - pg + i] == model[off + i])
			i++;
		fail("mapread differs at 0x%" PRIx64 ": map 0x%02x, model "
		     "0x%02x", off + i, p[off - pg + i], model[off + i]);
	}
	if (munmap(p, mlen))
		fail("munmap: %s", strerror(errno));
}

static void do_mapwrite(uint64_t off, uint64_t len)
{
	uint64_t pg = off & ~((uint64_t)pagesize - 1);
	uint64_t mlen = len + (off - pg);
	unsigned char *p;

	if (off + len > model_size) {
		if (ftruncate(vfd, off + len))
			fail("ftruncate (mapwrite) 0x%" PRIx64 ": %s",
			     off + len, strerror(errno));
		model_resize(off + len);
	}
	p = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, pg);
	if (p == MAP_FAILED)
		fail("mmap write off=0x%" PRIx64 " len=0x%" PRIx64 ": %s", pg,
		     mlen, strerror(errno));
	for (uint64_t i = 0; i < len; i++)
		buf[i] = (unsigned char)rnd();
	memcpy(p + (off - pg), buf, len);
	memcpy(model + off, buf, len);
	if (msync(p, mlen, MS_SYNC))
		fail("msync: %s", strerror(errno));
	if (munmap(p, mlen))
		fail("munmap: %s", strerror(errno));
}

/* returns 0 when done, 1 when the mode is unsupported (and now disabled) */
static int do_fallocate(int op, uint64_t off, uint64_t len)
{
	int mode = 0;

	switch (op) {
	case OP_KEEPSIZE: mode = FALLOC_FL_KEEP_SIZE; break;
	case OP_PUNCH: mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; break;
	case OP_ZERO: mode = FALLOC_FL_ZERO_RANGE; break;
	case OP_ZERO_KEEP:
		mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE; break;
	}
	if (fallocate(vfd, mode, off, len)) {
		if (errno == EOPNOTSUPP || errno == ENOSYS) {
			disabled[op] = 1;
			if (verbose)
				fprintf(stderr, "shiftfsx: %s unsupported, "
					"disabled\n", op_name[op]);
			return 1;
		}
		fail("fallocate %s off=0x%" PRIx64 " len=0x%" PRIx64 ": %s",
		     op_name[op], off, len, strerror(errno));
	}
	switch (op) {
	case OP_FALLOC:
	case OP_ZERO:
		if (op == OP_ZERO) {
			uint64_t end = off + len < model_size ? off + len
							      : model_size;
			if (off < end)
				memset(model + off, 0, end - off);
		}
		if (off + len > model_size)
			model_resize(off + len);
		break;
	case OP_KEEPSIZE:
		break;
	case OP_PUNCH:
	case OP_ZERO_KEEP:
		if (off < model_size) {
			uint64_t end = off + len < model_size ? off + len
							      : model_size;
			memset(model + off, 0, end - off);
		}
		break;
	}
	return 0;
}

static int pick_op(void)
{
	int total = 0, r;

	for (int i = 0; i < OP_NR; i++)
		if (!disabled[i])
			total += op_weight[i];
	r = (int)rnd_below(total);
	for (int i = 0; i < OP_NR; i++) {
		if (disabled[i])
			continue;
		if (r < op_weight[i])
			return i;
		r -= op_weight[i];
	}
	return OP_WRITE;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: shiftfsx [-s SEED] [-n OPS] [-m MAXLEN] [-c CHECKEVERY]"
		" [-L LOGLEN] [-M] [-F] [-v] VIEWFILE LOWERFILE\n"
		"  -M no mmap ops, -F no fallocate ops\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int c;
	uint64_t skipped = 0;

	seed = 1;
	nops = 1000;
	maxlen = 256 * 1024;
	while ((c = getopt(argc, argv, "s:n:m:c:L:MFv")) != -1) {
		switch (c) {
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'n': nops = strtoull(optarg, NULL, 0); break;
		case 'm': maxlen = strtoull(optarg, NULL, 0); break;
		case 'c': checkevery = strtoull(optarg, NULL, 0); break;
		case 'L': loglen = strtoull(optarg, NULL, 0); break;
		case 'M': do_mmap = 0; break;
		case 'F': do_falloc = 0; break;
		case 'v': verbose = 1; break;
		default: usage();
		}
	}
	if (argc - optind != 2 || maxlen < 4096 || !loglen)
		usage();
	view_path = argv[optind];
	lower_path = argv[optind + 1];
	pagesize = sysconf(_SC_PAGESIZE);
	rng_state = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
	if (!rng_state)
		rng_state = 1;
	if (!do_mmap)
		disabled[OP_MAPREAD] = disabled[OP_MAPWRITE] = 1;
	if (!do_falloc)
		for (int i = OP_FALLOC; i <= OP_ZERO_KEEP; i++)
			disabled[i] = 1;

	model = calloc(1, maxlen);
	buf = malloc(maxlen);
	buf2 = malloc(maxlen);
	oplog = calloc(loglen, sizeof(*oplog));
	if (!model || !buf || !buf2 || !oplog)
		die("out of memory");
	vfd = open(view_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (vfd < 0)
		die("open %s: %s", view_path, strerror(errno));
	lfd = open(lower_path, O_RDONLY);
	if (lfd < 0)
		die("open %s: %s", lower_path, strerror(errno));
	compare_range(0, 0);

	for (uint64_t n = 0; n < nops; n++) {
		int op = pick_op();
		uint64_t off = rnd_below(maxlen), len;
		struct logent *e = &oplog[logpos % loglen];
		int skip = 0;

		/* mostly small ops, sometimes large */
		len = (rnd() & 3) ? 1 + rnd_below(4096 * 4)
				  : 1 + rnd_below(maxlen / 2);
		if (off + len > maxlen)
			len = maxlen - off;
		if (!len)
			len = 1, off = maxlen - 1;
		if ((op == OP_READ || op == OP_MAPREAD) && model_size == 0)
			op = OP_WRITE;
		if (op == OP_READ || op == OP_MAPREAD) {
			off = rnd_below(model_size);
			if (off + len > model_size)
				len = model_size - off;
		}
		if (op == OP_TRUNCATE) {
			off = rnd_below(maxlen + 1);
			len = 0;
		}
		if (op == OP_FSYNC)
			off = len = 0;
		e->n = n;
		e->op = op;
		e->off = off;
		e->len = len;
		e->skipped = 0;
		logpos++;
		counts[op]++;
		switch (op) {
		case OP_READ:
			compare_range(off, len);
			break;
		case OP_WRITE:
			do_write(off, len);
			break;
		case OP_TRUNCATE:
			if (ftruncate(vfd, off))
				fail("ftruncate 0x%" PRIx64 ": %s", off,
				     strerror(errno));
			model_resize(off);
			break;
		case OP_MAPREAD:
			do_mapread(off, len);
			break;
		case OP_MAPWRITE:
			do_mapwrite(off, len);
			break;
		case OP_FSYNC:
			if (fsync(vfd))
				fail("fsync: %s", strerror(errno));
			break;
		default:
			skip = do_fallocate(op, off, len);
			break;
		}
		e->size_after = model_size;
		if (skip) {
			e->skipped = 1;
			counts[op]--;
			skipped_counts[op]++;
			skipped++;
			continue;
		}
		if (verbose)
			fprintf(stderr, "#%" PRIu64 " %s 0x%" PRIx64 " 0x%"
				PRIx64 " -> 0x%" PRIx64 "\n", n, op_name[op],
				off, len, model_size);
		compare_range(off, len);
		if (checkevery && (n + 1) % checkevery == 0)
			compare_range(0, model_size);
	}
	if (fsync(vfd))
		fail("final fsync: %s", strerror(errno));
	compare_range(0, model_size);
	if (close(vfd))
		fail("close: %s", strerror(errno));
	close(lfd);

	printf("{\"seed\": %" PRIu64 ", \"ops\": %" PRIu64
	       ", \"skipped\": %" PRIu64 ", \"final_size\": %" PRIu64
	       ", \"counts\": {", seed, nops - skipped, skipped, model_size);
	for (int i = 0; i < OP_NR; i++)
		printf("%s\"%s\": %" PRIu64, i ? ", " : "", op_name[i],
		       counts[i]);
	printf("}, \"unsupported\": [");
	for (int i = 0, first = 1; i < OP_NR; i++) {
		if (disabled[i] && skipped_counts[i]) {
			printf("%s\"%s\"", first ? "" : ", ", op_name[i]);
			first = 0;
		}
	}
	printf("]}\n");
	return 0;
}
