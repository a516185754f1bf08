// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs mount options through fs_context/fs_parser.
 *
 * Every rejected option gives -EINVAL with a one-line reason, both in the
 * fs_context log (read by fsconfig(2) callers from the fsopen() fd) and in
 * the kernel log.
 */
#include <linux/fs_parser.h>
#include <linux/magic.h>
#include <linux/namei.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/ctype.h>
#include "shiftfs.h"

enum shiftfs_opt {
	Opt_shift_uids,
	Opt_shift_gids,
	Opt_uidmap,
	Opt_gidmap,
	Opt_userns,
};

static const struct fs_parameter_spec shiftfs_param_specs[] = {
	fsparam_flag("shift_uids", Opt_shift_uids),
	fsparam_flag("shift_gids", Opt_shift_gids),
	fsparam_string("uidmap", Opt_uidmap),
	fsparam_string("gidmap", Opt_gidmap),
	fsparam_string("userns", Opt_userns),
	{}
};

/* extents collected while parsing, one list per id type */
struct shiftfs_extents {
	u32 nr;
	bool from_userns;
	struct shiftfs_extent ext[SHIFTFS_MAX_EXTENTS];
};

struct shiftfs_fs_context {
	bool shift_uids;
	bool shift_gids;
	bool any_option;
	char *userns_path;
	struct shiftfs_extents uids;
	struct shiftfs_extents gids;
	/* the same from userns= */
	struct shiftfs_extents ns_uids;
	struct shiftfs_extents ns_gids;
};

/*
 * Report a bad option: into the kernel log, and into the fs_context log
 * when there is one (fsopen(); without one errorf() would only print it a
 * second time).
 */
__printf(2, 3)
static int shiftfs_inval(struct fs_context *fc, const char *fmt, ...)
{
	struct va_format vaf;
	va_list args;

	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	shiftfs_err("%pV\n", &vaf);
	if (fc->log.log)
		errorf(fc, "%pV", &vaf);
	va_end(args);
	return -EINVAL;
}

/* decimal, or hexadecimal with a 0x prefix; nothing else */
static int parse_id(const char *s, u32 *val)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		if (!isxdigit(s[2]))
			return -EINVAL;
		return kstrtou32(s + 2, 16, val);
	}
	if (!isdigit(s[0]))
		return -EINVAL;
	return kstrtou32(s, 10, val);
}

static int parse_extent(struct fs_context *fc, const char *key,
			const char *value, struct shiftfs_extents *list)
{
	struct shiftfs_extent e;
	char *buf, *p, *field[3];
	const char *why;
	u32 v[3];
	int i, err;

	if (list->nr >= SHIFTFS_MAX_EXTENTS)
		return shiftfs_inval(fc, "%s: more than %d extents", key,
				     SHIFTFS_MAX_EXTENTS);
	buf = kstrdup(value, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	p = buf;
	for (i = 0; i < 3; i++) {
		field[i] = strsep(&p, ":");
		if (!field[i])
			break;
	}
	if (i < 3 || p) {
		err = shiftfs_inval(fc, "%s=%s: expected FROM:TO:COUNT", key,
				    value);
		goto out;
	}
	for (i = 0; i < 3; i++) {
		if (parse_id(field[i], &v[i])) {
			err = shiftfs_inval(fc, "%s=%s: '%s' is not a decimal or 0x-hex 32-bit number",
					    key, value, field[i]);
			goto out;
		}
	}
	e.disk = v[0];
	e.view = v[1];
	e.count = v[2];
	err = shiftfs_extent_check(&e, &why);
	if (err) {
		err = shiftfs_inval(fc, "%s=%s: %s", key, value, why);
		goto out;
	}
	list->ext[list->nr++] = e;
out:
	kfree(buf);
	return err;
}

/* Copy the extents of one map of a user namespace. */
static void copy_ns_map(const struct uid_gid_map *map,
			struct shiftfs_extents *list)
{
	const struct uid_gid_extent *ext;
	u32 nr, i;

	nr = READ_ONCE(map->nr_extents);
	/* pairs with the write barrier in map_write() */
	smp_rmb();
	ext = nr <= UID_GID_MAP_MAX_BASE_EXTENTS ? map->extent : map->forward;
	nr = min_t(u32, nr, SHIFTFS_MAX_EXTENTS);
	for (i = 0; i < nr; i++) {
		/* id X inside the namespace is host id lower_first + (X - first) */
		list->ext[i].disk = ext[i].first;
		list->ext[i].view = ext[i].lower_first;
		list->ext[i].count = ext[i].count;
	}
	list->nr = nr;
	list->from_userns = true;
}

static int parse_userns(struct fs_context *fc, struct shiftfs_fs_context *ctx,
			const char *name)
{
	struct user_namespace *ns;
	struct ns_common *nsc;
	struct path path;
	int err;

	if (ctx->userns_path)
		return shiftfs_inval(fc, "userns= given twice");
	err = kern_path(name, LOOKUP_FOLLOW, &path);
	if (err)
		return shiftfs_inval(fc, "userns=%s: cannot open (error %d)",
				     name, err);
	if (path.dentry->d_sb->s_magic != NSFS_MAGIC || !d_inode(path.dentry)) {
		err = shiftfs_inval(fc, "userns=%s: not a namespace file",
				    name);
		goto out;
	}
	nsc = get_proc_ns(d_inode(path.dentry));
	if (!nsc || !shiftfs_ns_is_user(nsc)) {
		err = shiftfs_inval(fc, "userns=%s: not a user namespace",
				    name);
		goto out;
	}
	ns = container_of(nsc, struct user_namespace, ns);
	copy_ns_map(&ns->uid_map, &ctx->ns_uids);
	copy_ns_map(&ns->gid_map, &ctx->ns_gids);
	ctx->userns_path = kstrdup(name, GFP_KERNEL);
	err = ctx->userns_path ? 0 : -ENOMEM;
out:
	path_put(&path);
	return err;
}

static int shiftfs_parse_param(struct fs_context *fc,
			       struct fs_parameter *param)
{
	struct shiftfs_fs_context *ctx = fc->fs_private;
	struct fs_parse_result result;
	int opt;

	opt = fs_parse(fc, shiftfs_param_specs, param, &result);
	if (opt < 0)
		return opt;
	ctx->any_option = true;

	switch (opt) {
	case Opt_shift_uids:
		ctx->shift_uids = true;
		return 0;
	case Opt_shift_gids:
		ctx->shift_gids = true;
		return 0;
	case Opt_uidmap:
		return parse_extent(fc, "uidmap", param->string, &ctx->uids);
	case Opt_gidmap:
		return parse_extent(fc, "gidmap", param->string, &ctx->gids);
	case Opt_userns:
		return parse_userns(fc, ctx, param->string);
	}
	return -EINVAL;
}

/*
 * Check the options as a whole and turn them into the superblock's maps.
 * Used for a new mount and, to compare, for a remount.
 */
static int shiftfs_build(struct fs_context *fc, struct shiftfs_sb_info *sbi)
{
	struct shiftfs_fs_context *ctx = fc->fs_private;
	const struct shiftfs_extents *u = &ctx->uids, *g = &ctx->gids;
	const char *why;
	int err;

	if (u->nr && !ctx->shift_uids)
		return shiftfs_inval(fc, "uidmap= needs shift_uids");
	if (g->nr && !ctx->shift_gids)
		return shiftfs_inval(fc, "gidmap= needs shift_gids");
	if (ctx->userns_path && !ctx->shift_uids && !ctx->shift_gids)
		return shiftfs_inval(fc, "userns= needs shift_uids or shift_gids");
	if (ctx->userns_path && (u->nr || g->nr))
		return shiftfs_inval(fc, "userns= cannot be combined with uidmap= or gidmap=");
	if (ctx->userns_path) {
		u = &ctx->ns_uids;
		g = &ctx->ns_gids;
	}
	if (ctx->shift_uids && !u->nr)
		return shiftfs_inval(fc, "shift_uids needs uidmap= or userns= (with a uid map)");
	if (ctx->shift_gids && !g->nr)
		return shiftfs_inval(fc, "shift_gids needs gidmap= or userns= (with a gid map)");

	sbi->shift_uids = ctx->shift_uids;
	sbi->shift_gids = ctx->shift_gids;
	err = shiftfs_map_build(&sbi->uid_map, u->ext, u->nr, &why);
	if (err)
		return err == -EINVAL ? shiftfs_inval(fc, "uid map: %s", why) : err;
	err = shiftfs_map_build(&sbi->gid_map, g->ext, g->nr, &why);
	if (err) {
		shiftfs_map_free(&sbi->uid_map);
		return err == -EINVAL ? shiftfs_inval(fc, "gid map: %s", why) : err;
	}
	return 0;
}

static int shiftfs_get_tree(struct fs_context *fc)
{
	return get_tree_nodev(fc, shiftfs_fill_super);
}

int shiftfs_fill_super_maps(struct fs_context *fc, struct shiftfs_sb_info *sbi)
{
	return shiftfs_build(fc, sbi);
}

int shiftfs_lower_error(struct fs_context *fc, const char *src, int err)
{
	if (!src)
		return shiftfs_inval(fc, "no lower directory given");
	if (err == -ENOTDIR)
		return shiftfs_inval(fc, "lower %s is not a directory", src);
	if (err == -ELOOP)
		return shiftfs_inval(fc,
				     "lower %s: stacking too deep (the kernel allows %d stacked filesystems)",
				     src, FILESYSTEM_MAX_STACK_DEPTH);
	return shiftfs_inval(fc, "lower directory %s: cannot be opened (error %d)",
			     src, err);
}

/*
 * Remount can change the generic flags (ro/rw, ...) but not the shift; the
 * same options (as mount(8) passes them back from mountinfo) are accepted.
 */
static int shiftfs_reconfigure(struct fs_context *fc)
{
	struct shiftfs_fs_context *ctx = fc->fs_private;
	struct shiftfs_sb_info *cur = SHIFTFS_SB(fc->root->d_sb);
	struct shiftfs_sb_info new = {};
	bool same;
	int err;

	if (!ctx->any_option)
		return 0;
	err = shiftfs_build(fc, &new);
	if (err)
		return err;
	same = new.shift_uids == cur->shift_uids &&
	       new.shift_gids == cur->shift_gids &&
	       shiftfs_map_equal(&new.uid_map, &cur->uid_map) &&
	       shiftfs_map_equal(&new.gid_map, &cur->gid_map);
	shiftfs_map_free(&new.uid_map);
	shiftfs_map_free(&new.gid_map);
	if (!same)
		return shiftfs_inval(fc, "the shift cannot be changed by a remount");
	return 0;
}

static void shiftfs_free_fc(struct fs_context *fc)
{
	struct shiftfs_fs_context *ctx = fc->fs_private;

	if (ctx)
		kfree(ctx->userns_path);
	kvfree(ctx);
}

static const struct fs_context_operations shiftfs_context_ops = {
	.parse_param	= shiftfs_parse_param,
	.get_tree	= shiftfs_get_tree,
	.reconfigure	= shiftfs_reconfigure,
	.free		= shiftfs_free_fc,
};

int shiftfs_init_fs_context(struct fs_context *fc)
{
	struct shiftfs_fs_context *ctx;

	/*
	 * Only the real root may mount: a shiftfs mount decides which ids
	 * land on the lower, so it is never allowed from a user namespace
	 * (the fs type has no FS_USERNS_MOUNT either).
	 */
	if (!capable(CAP_SYS_ADMIN) || fc->user_ns != &init_user_ns)
		return -EPERM;
	ctx = kvzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	fc->fs_private = ctx;
	fc->ops = &shiftfs_context_ops;
	return 0;
}

static void show_map(struct seq_file *m, const char *key,
		     const struct shiftfs_map *map)
{
	u32 i;

	for (i = 0; i < map->nr; i++)
		seq_printf(m, ",%s=%u:%u:%u", key, map->by_disk[i].disk,
			   map->by_disk[i].view, map->by_disk[i].count);
}

int shiftfs_show_options(struct seq_file *m, struct dentry *root)
{
	struct shiftfs_sb_info *sbi = SHIFTFS_SB(root->d_sb);

	if (sbi->shift_uids) {
		seq_puts(m, ",shift_uids");
		show_map(m, "uidmap", &sbi->uid_map);
	}
	if (sbi->shift_gids) {
		seq_puts(m, ",shift_gids");
		show_map(m, "gidmap", &sbi->gid_map);
	}
	return 0;
}
