// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs id maps: sorted extent arrays searched with a binary search.
 *
 * An extent (disk, view, count) says disk id disk + i is seen through the
 * mount as view id view + i.  A map is a bijection between the union of its
 * disk ranges and the union of its view ranges; anything outside has no
 * image (the caller gets (u32)-1, the invalid id).
 */
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/string.h>
#include "shiftfs.h"

static int cmp_disk(const void *a, const void *b)
{
	const struct shiftfs_extent *x = a, *y = b;

	if (x->disk != y->disk)
		return x->disk < y->disk ? -1 : 1;
	return 0;
}

static int cmp_view(const void *a, const void *b)
{
	const struct shiftfs_extent *x = a, *y = b;

	if (x->view != y->view)
		return x->view < y->view ? -1 : 1;
	return 0;
}

/* Check one extent on its own; @why gets a reason on failure. */
int shiftfs_extent_check(const struct shiftfs_extent *e, const char **why)
{
	u64 dlast = (u64)e->disk + e->count - 1;
	u64 vlast = (u64)e->view + e->count - 1;

	if (!e->count) {
		*why = "COUNT is 0";
		return -EINVAL;
	}
	if (dlast > U32_MAX || vlast > U32_MAX) {
		*why = "extent wraps past 4294967295";
		return -EINVAL;
	}
	if (dlast == U32_MAX || vlast == U32_MAX) {
		*why = "extent covers id 4294967295, which is not a valid id";
		return -EINVAL;
	}
	return 0;
}

static bool overlaps(const struct shiftfs_extent *sorted, u32 nr, bool disk)
{
	u32 i;

	for (i = 1; i < nr; i++) {
		u64 prev_end, start;

		if (disk) {
			prev_end = (u64)sorted[i - 1].disk + sorted[i - 1].count;
			start = sorted[i].disk;
		} else {
			prev_end = (u64)sorted[i - 1].view + sorted[i - 1].count;
			start = sorted[i].view;
		}
		if (start < prev_end)
			return true;
	}
	return false;
}

/*
 * Build @map from @nr unsorted extents.  Fails with -EINVAL (reason in
 * @why) if an extent is bad or two extents overlap on either side.
 */
int shiftfs_map_build(struct shiftfs_map *map,
		      const struct shiftfs_extent *ext, u32 nr,
		      const char **why)
{
	size_t size = array_size(nr, sizeof(*ext));
	u32 i;
	int err;

	memset(map, 0, sizeof(*map));
	if (nr > SHIFTFS_MAX_EXTENTS) {
		*why = "more than 340 extents";
		return -EINVAL;
	}
	for (i = 0; i < nr; i++) {
		err = shiftfs_extent_check(&ext[i], why);
		if (err)
			return err;
	}
	if (!nr)
		return 0;

	map->by_disk = kmemdup(ext, size, GFP_KERNEL);
	map->by_view = kmemdup(ext, size, GFP_KERNEL);
	if (!map->by_disk || !map->by_view) {
		err = -ENOMEM;
		*why = "out of memory";
		goto out_free;
	}
	sort(map->by_disk, nr, sizeof(*ext), cmp_disk, NULL);
	sort(map->by_view, nr, sizeof(*ext), cmp_view, NULL);
	err = -EINVAL;
	if (overlaps(map->by_disk, nr, true)) {
		*why = "extents overlap on the disk (FROM) side";
		goto out_free;
	}
	if (overlaps(map->by_view, nr, false)) {
		*why = "extents overlap on the view (TO) side";
		goto out_free;
	}
	map->nr = nr;
	return 0;

out_free:
	shiftfs_map_free(map);
	return err;
}

void shiftfs_map_free(struct shiftfs_map *map)
{
	kfree(map->by_disk);
	kfree(map->by_view);
	memset(map, 0, sizeof(*map));
}

bool shiftfs_map_equal(const struct shiftfs_map *a,
		       const struct shiftfs_map *b)
{
	if (a->nr != b->nr)
		return false;
	if (!a->nr)
		return true;
	return !memcmp(a->by_disk, b->by_disk, a->nr * sizeof(*a->by_disk));
}

/* Binary search for the extent whose [start, start + count) holds @id. */
static const struct shiftfs_extent *
find_extent(const struct shiftfs_extent *ext, u32 nr, u32 id, bool disk)
{
	u32 lo = 0, hi = nr;

	while (lo < hi) {
		u32 mid = lo + (hi - lo) / 2;
		u32 start = disk ? ext[mid].disk : ext[mid].view;

		if (id < start)
			hi = mid;
		else if (id - start >= ext[mid].count)
			lo = mid + 1;
		else
			return &ext[mid];
	}
	return NULL;
}

u32 shiftfs_map_to_view(const struct shiftfs_map *map, u32 id)
{
	const struct shiftfs_extent *e;

	e = find_extent(map->by_disk, map->nr, id, true);
	if (!e)
		return (u32)-1;
	return e->view + (id - e->disk);
}

u32 shiftfs_map_to_disk(const struct shiftfs_map *map, u32 id)
{
	const struct shiftfs_extent *e;

	e = find_extent(map->by_view, map->nr, id, false);
	if (!e)
		return (u32)-1;
	return e->disk + (id - e->view);
}

/*
 * kuid/kgid helpers.  Ids are handled as the lower mount presents them
 * (its idmapping applied), and as global kernel ids on the view side.
 * Without shift_uids (shift_gids) the ids pass unchanged.  An id without
 * an image becomes INVALID_UID (INVALID_GID): stat shows it as the
 * overflow id and the VFS grants nothing on it.
 */
kuid_t shiftfs_uid_to_view(const struct shiftfs_sb_info *sbi, kuid_t disk)
{
	if (!sbi->shift_uids || !uid_valid(disk))
		return disk;
	return KUIDT_INIT(shiftfs_map_to_view(&sbi->uid_map, __kuid_val(disk)));
}

kgid_t shiftfs_gid_to_view(const struct shiftfs_sb_info *sbi, kgid_t disk)
{
	if (!sbi->shift_gids || !gid_valid(disk))
		return disk;
	return KGIDT_INIT(shiftfs_map_to_view(&sbi->gid_map, __kgid_val(disk)));
}

kuid_t shiftfs_uid_to_disk(const struct shiftfs_sb_info *sbi, kuid_t view)
{
	if (!sbi->shift_uids || !uid_valid(view))
		return view;
	return KUIDT_INIT(shiftfs_map_to_disk(&sbi->uid_map, __kuid_val(view)));
}

kgid_t shiftfs_gid_to_disk(const struct shiftfs_sb_info *sbi, kgid_t view)
{
	if (!sbi->shift_gids || !gid_valid(view))
		return view;
	return KGIDT_INIT(shiftfs_map_to_disk(&sbi->gid_map, __kgid_val(view)));
}
