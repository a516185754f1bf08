// SPDX-License-Identifier: GPL-2.0
/*
 * fsbench: one workload, one directory, one process; prints the seconds the
 * timed loop took (clock_gettime(CLOCK_MONOTONIC) around the loop only).
 *
 *   fsbench prepare-tree DIR NFILES NDIRS    files for W1, W2, W4, W5
 *   fsbench prepare-file FILE MIB            a data file for W6, W8
 *   fsbench W1 DIR NFILES NDIRS REPS         stat every file, REPS times
 *   fsbench W2 DIR                           readdir + lstat, recursive
 *   fsbench W3 DIR NFILES                    create+write 4 KiB+close+unlink
 *   fsbench W4 DIR NFILES NDIRS UID GID      chown every file
 *   fsbench W5 FILE COUNT                    open + close
 *   fsbench W6 FILE                          sequential read (page cache)
 *   fsbench W7 FILE MIB                      sequential write + fsync
 *   fsbench W8 FILE COUNT                    4 KiB random reads via mmap
 *
 * A workload first changes into its directory (or its file's directory),
 * so the timed path walks start inside the access path under test, as a
 * container's do from its root: the prefix above the mount is not timed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static void die(const char *what, const char *path)
{
	fprintf(stderr, "fsbench: %s %s: %s\n", what, path ? path : "",
		strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void file_name(char *buf, size_t len, const char *dir, long i,
		      long ndirs)
{
	snprintf(buf, len, "%s/d%03ld/f%06ld", dir, i % ndirs, i);
}

static int prepare_tree(const char *dir, long nfiles, long ndirs)
{
	char path[4096];
	long i;
	int fd;

	for (i = 0; i < ndirs; i++) {
		snprintf(path, sizeof(path), "%s/d%03ld", dir, i);
		if (mkdir(path, 0755) && errno != EEXIST)
			die("mkdir", path);
	}
	for (i = 0; i < nfiles; i++) {
		file_name(path, sizeof(path), dir, i, ndirs);
		fd = open(path, O_CREAT | O_WRONLY, 0644);
		if (fd < 0)
			die("create", path);
		close(fd);
	}
	return 0;
}

static int prepare_file(const char *file, long mib)
{
	char *buf = malloc(CHUNK);
	long i;
	int fd;

	if (!buf)
		die("malloc", NULL);
	for (i = 0; i < CHUNK; i++)
		buf[i] = (char)(i * 7 + 3);
	fd = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0)
		die("create", file);
	for (i = 0; i < mib; i++)
		if (write(fd, buf, CHUNK) != CHUNK)
			die("write", file);
	if (fsync(fd))
		die("fsync", file);
	close(fd);
	free(buf);
	return 0;
}

static double w1_stat(const char *dir, long nfiles, long ndirs, long reps)
{
	char path[4096];
	struct stat st;
	double t0;
	long r, i;

	for (i = 0; i < nfiles; i++) {	/* warm the caches */
		file_name(path, sizeof(path), dir, i, ndirs);
		if (stat(path, &st))
			die("stat", path);
	}
	t0 = now();
	for (r = 0; r < reps; r++)
		for (i = 0; i < nfiles; i++) {
			file_name(path, sizeof(path), dir, i, ndirs);
			if (stat(path, &st))
				die("stat", path);
		}
	return now() - t0;
}

static long walk(const char *dir)
{
	char path[4096];
	struct dirent *de;
	struct stat st;
	long n = 0;
	DIR *d = opendir(dir);

	if (!d)
		die("opendir", dir);
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st))
			die("lstat", path);
		n++;
		if (S_ISDIR(st.st_mode))
			n += walk(path);
	}
	closedir(d);
	return n;
}

static double w2_readdir(const char *dir)
{
	double t0;

	walk(dir);
	t0 = now();
	walk(dir);
	return now() - t0;
}

static double w3_create(const char *dir, long nfiles)
{
	char path[4096], buf[4096];
	double t0;
	long i;
	int fd;

	memset(buf, 0x5a, sizeof(buf));
	t0 = now();
	for (i = 0; i < nfiles; i++) {
		snprintf(path, sizeof(path), "%s/c%06ld", dir, i);
		fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd < 0)
			die("create", path);
		if (write(fd, buf, sizeof(buf)) != sizeof(buf))
			die("write", path);
		close(fd);
		if (unlink(path))
			die("unlink", path);
	}
	return now() - t0;
}

static double w4_chown(const char *dir, long nfiles, long ndirs, uid_t uid,
		       gid_t gid)
{
	char path[4096];
	double t0;
	long i;

	t0 = now();
	for (i = 0; i < nfiles; i++) {
		file_name(path, sizeof(path), dir, i, ndirs);
		if (chown(path, uid + (i & 1), gid + (i & 1)))
			die("chown", path);
	}
	return now() - t0;
}

static double w5_open(const char *file, long count)
{
	double t0;
	long i;
	int fd;

	t0 = now();
	for (i = 0; i < count; i++) {
		fd = open(file, O_RDONLY);
		if (fd < 0)
			die("open", file);
		close(fd);
	}
	return now() - t0;
}

static double w6_read(const char *file)
{
	char *buf = malloc(CHUNK);
	double t0 = 0;
	ssize_t n;
	int pass, fd;

	if (!buf)
		die("malloc", NULL);
	for (pass = 0; pass < 2; pass++) {	/* pass 0 fills the cache */
		fd = open(file, O_RDONLY);
		if (fd < 0)
			die("open", file);
		if (pass)
			t0 = now();
		while ((n = read(fd, buf, CHUNK)) > 0)
			;
		if (n < 0)
			die("read", file);
		close(fd);
	}
	free(buf);
	return now() - t0;
}

static double w7_write(const char *file, long mib)
{
	char *buf = malloc(CHUNK);
	double t0;
	long i;
	int fd;

	if (!buf)
		die("malloc", NULL);
	memset(buf, 0xa5, CHUNK);
	fd = open(file, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0)
		die("create", file);
	t0 = now();
	for (i = 0; i < mib; i++)
		if (write(fd, buf, CHUNK) != CHUNK)
			die("write", file);
	if (fsync(fd))
		die("fsync", file);
	t0 = now() - t0;
	close(fd);
	unlink(file);
	free(buf);
	return t0;
}

static double w8_mmap(const char *file, long count)
{
	unsigned long long x = 88172645463325252ULL, sum = 0;
	char buf[4096];
	struct stat st;
	double t0;
	long i, pages;
	char *map;
	int fd;

	fd = open(file, O_RDONLY);
	if (fd < 0 || fstat(fd, &st))
		die("open", file);
	pages = st.st_size / 4096;
	map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED || pages == 0)
		die("mmap", file);
	for (i = 0; i < pages; i++)	/* fault everything in once */
		memcpy(buf, map + i * 4096, 1);
	t0 = now();
	for (i = 0; i < count; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(buf, map + (x % pages) * 4096, sizeof(buf));
		sum += buf[x % sizeof(buf)];
	}
	t0 = now() - t0;
	if (sum == 1)	/* keep the copies from being optimised away */
		fprintf(stderr, "%llu\n", sum);
	munmap(map, st.st_size);
	close(fd);
	return t0;
}

static long num(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || *end || v < 0) {
		fprintf(stderr, "fsbench: bad number %s\n", s);
		exit(2);
	}
	return v;
}

/* chdir into @path (a directory) or its parent; the name to use after */
static char *enter(char *path, int is_dir)
{
	char *slash = strrchr(path, '/');

	if (is_dir) {
		if (chdir(path))
			die("chdir", path);
		return ".";
	}
	if (!slash)
		return path;
	*slash = '\0';
	if (chdir(*path ? path : "/"))
		die("chdir", path);
	return slash + 1;
}

int main(int argc, char **argv)
{
	const char *w = argc > 1 ? argv[1] : "";
	double s;

	if (argc > 2 && w[0] == 'W')
		argv[2] = enter(argv[2], strchr("1234", w[1]) && w[1]);

	if (!strcmp(w, "prepare-tree") && argc == 5)
		return prepare_tree(argv[2], num(argv[3]), num(argv[4]));
	if (!strcmp(w, "prepare-file") && argc == 4)
		return prepare_file(argv[2], num(argv[3]));
	if (!strcmp(w, "W1") && argc == 6)
		s = w1_stat(argv[2], num(argv[3]), num(argv[4]), num(argv[5]));
	else if (!strcmp(w, "W2") && argc == 3)
		s = w2_readdir(argv[2]);
	else if (!strcmp(w, "W3") && argc == 4)
		s = w3_create(argv[2], num(argv[3]));
	else if (!strcmp(w, "W4") && argc == 7)
		s = w4_chown(argv[2], num(argv[3]), num(argv[4]), num(argv[5]),
			     num(argv[6]));
	else if (!strcmp(w, "W5") && argc == 4)
		s = w5_open(argv[2], num(argv[3]));
	else if (!strcmp(w, "W6") && argc == 3)
		s = w6_read(argv[2]);
	else if (!strcmp(w, "W7") && argc == 4)
		s = w7_write(argv[2], num(argv[3]));
	else if (!strcmp(w, "W8") && argc == 4)
		s = w8_mmap(argv[2], num(argv[3]));
	else {
		fprintf(stderr, "usage: fsbench W1..W8|prepare-tree|prepare-file ARGS (see the source)\n");
		return 2;
	}
	printf("%.6f\n", s);
	return 0;
}
