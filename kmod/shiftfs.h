/* SPDX-License-Identifier: GPL-2.0 */
/*
 * shiftfs: a stacking filesystem that shifts uids and gids between the
 * lower directory ("disk" ids) and the mount ("view" ids).
 */
#ifndef _SHIFTFS_H
#define _SHIFTFS_H

#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/cred.h>
#include <linux/uidgid.h>
#include <linux/mount.h>
#include <linux/path.h>
#include "compat.h"

#define SHIFTFS_NAME		"shiftfs"
#define SHIFTFS_MAGIC		0x73686674	/* "shft" */
#define SHIFTFS_MAX_EXTENTS	340

#define shiftfs_err(fmt, ...)	pr_err(SHIFTFS_NAME ": " fmt, ##__VA_ARGS__)

/* disk id @disk + i is seen as view id @view + i, for 0 <= i < @count */
struct shiftfs_extent {
	u32 disk;
	u32 view;
	u32 count;
};

/*
 * An id map: the same extents twice, once sorted by disk id (for
 * disk->view) and once by view id (for view->disk); both are searched
 * with a binary search.
 */
struct shiftfs_map {
	u32 nr;
	struct shiftfs_extent *by_disk;
	struct shiftfs_extent *by_view;
};

/*
 * Lower credentials are derived from the caller's: a small per-superblock
 * cache keyed by the caller's struct cred (which is immutable, and held
 * while cached, so its address cannot be reused) saves an allocation and
 * an RCU free on each operation.  A caller in a user namespace has two
 * variants (with or without its file capabilities, see inode.c).
 */
#define SHIFTFS_CRED_SLOTS	8

struct shiftfs_cred_slot {
	const struct cred *caller;
	const struct cred *lower[2];
};

struct shiftfs_cred_cache {
	spinlock_t lock;
	unsigned int next;
	struct shiftfs_cred_slot slot[SHIFTFS_CRED_SLOTS];
};

/*
 * Lock classes of one superblock.  A stack of shiftfs and other stacking
 * filesystems takes the locks of several layers in turn (the VFS those of
 * the top, each layer those of the one below); keys per fs type or per
 * depth make two unrelated stacks look like one, and lockdep then reports
 * cycles that no single stack can close.  Registered with lockdep for the
 * life of the superblock.
 */
struct shiftfs_lock_keys {
	struct lock_class_key writers[SB_FREEZE_LEVELS];
	struct lock_class_key dir;
	struct lock_class_key nondir;
};

struct shiftfs_sb_info {
	struct path lower;
	struct shiftfs_lock_keys keys;
	bool shift_uids;
	bool shift_gids;
	struct shiftfs_map uid_map;
	struct shiftfs_map gid_map;
	struct shiftfs_cred_cache creds;
};

/*
 * @lower_uid/@lower_gid: the lower inode's ids that the view ids in
 * vfs_inode were last computed from (valid once @ids_valid is set), so an
 * unchanged owner is not translated again on every permission check.
 */
struct shiftfs_inode {
	struct inode vfs_inode;
	struct inode *lower;
	kuid_t lower_uid;
	kgid_t lower_gid;
	bool ids_valid;
};

static inline struct shiftfs_sb_info *SHIFTFS_SB(const struct super_block *sb)
{
	return sb->s_fs_info;
}

static inline struct shiftfs_inode *SHIFTFS_I(const struct inode *inode)
{
	return container_of(inode, struct shiftfs_inode, vfs_inode);
}

static inline struct inode *shiftfs_lower_inode(const struct inode *inode)
{
	return SHIFTFS_I(inode)->lower;
}

/*
 * A positive shiftfs dentry keeps its lower dentry for its whole life.  A
 * negative one may get a new lower dentry when something is created under
 * its name; that swap happens under d_lock, see shiftfs_set_lower().
 */
static inline struct dentry *shiftfs_lower(const struct dentry *dentry)
{
	return READ_ONCE(dentry->d_fsdata);
}

static inline struct mnt_idmap *shiftfs_lower_idmap(const struct super_block *sb)
{
	return shiftfs_mnt_idmap(SHIFTFS_SB(sb)->lower.mnt);
}

static inline void shiftfs_lower_path(const struct dentry *dentry,
				      struct path *path)
{
	path->mnt = SHIFTFS_SB(dentry->d_sb)->lower.mnt;
	path->dentry = shiftfs_lower(dentry);
}

/* idmap.c */
int shiftfs_map_build(struct shiftfs_map *map,
		      const struct shiftfs_extent *ext, u32 nr,
		      const char **why);
void shiftfs_map_free(struct shiftfs_map *map);
bool shiftfs_map_equal(const struct shiftfs_map *a,
		       const struct shiftfs_map *b);
u32 shiftfs_map_to_view(const struct shiftfs_map *map, u32 id);
u32 shiftfs_map_to_disk(const struct shiftfs_map *map, u32 id);
int shiftfs_extent_check(const struct shiftfs_extent *e, const char **why);

kuid_t shiftfs_uid_to_view(const struct shiftfs_sb_info *sbi, kuid_t disk);
kgid_t shiftfs_gid_to_view(const struct shiftfs_sb_info *sbi, kgid_t disk);
kuid_t shiftfs_uid_to_disk(const struct shiftfs_sb_info *sbi, kuid_t view);
kgid_t shiftfs_gid_to_disk(const struct shiftfs_sb_info *sbi, kgid_t view);

/* params.c */
int shiftfs_init_fs_context(struct fs_context *fc);
int shiftfs_show_options(struct seq_file *m, struct dentry *root);
int shiftfs_fill_super_maps(struct fs_context *fc, struct shiftfs_sb_info *sbi);
int shiftfs_lower_error(struct fs_context *fc, const char *src, int err);

/* super.c */
extern const struct dentry_operations shiftfs_dentry_ops;
struct inode *shiftfs_iget(struct super_block *sb, struct inode *lower);
int shiftfs_fill_super(struct super_block *sb, struct fs_context *fc);
void shiftfs_set_lower(struct dentry *dentry, struct dentry *lower);

/* inode.c: credentials and attributes */
struct shiftfs_creds {
	const struct cred *old;
	const struct cred *new;
};

void shiftfs_cred_cache_init(struct shiftfs_cred_cache *cc);
void shiftfs_cred_cache_free(struct shiftfs_cred_cache *cc);
const struct cred *shiftfs_get_creds(struct super_block *sb,
				     struct inode *const *objs,
				     unsigned int nr_objs);
int shiftfs_override_creds(struct super_block *sb, struct inode *const *objs,
			   unsigned int nr_objs, struct shiftfs_creds *sc);
void shiftfs_revert_creds(struct shiftfs_creds *sc);
int shiftfs_start_change(struct super_block *sb, struct inode *const *objs,
			 unsigned int nr_objs, struct shiftfs_creds *sc);
void shiftfs_end_change(struct super_block *sb, struct shiftfs_creds *sc);
int shiftfs_caller_mapped(struct super_block *sb);
void shiftfs_copyattr(struct inode *inode);
int shiftfs_permission(struct mnt_idmap *idmap, struct inode *inode,
		       int mask);
int shiftfs_getattr(struct mnt_idmap *idmap, const struct path *path,
		    struct kstat *stat, u32 request_mask,
		    unsigned int query_flags);
int shiftfs_setattr(struct mnt_idmap *idmap, struct dentry *dentry,
		    struct iattr *attr);
extern const struct inode_operations shiftfs_file_inode_ops;
extern const struct inode_operations shiftfs_symlink_inode_ops;
extern const struct inode_operations shiftfs_special_inode_ops;

/* xattr.c */
extern const struct xattr_handler *shiftfs_xattr_handlers[];
ssize_t shiftfs_listxattr(struct dentry *dentry, char *list, size_t size);
int shiftfs_fileattr_get(struct dentry *dentry, struct shiftfs_fileattr *fa);
int shiftfs_fileattr_set(struct mnt_idmap *idmap, struct dentry *dentry,
			 struct shiftfs_fileattr *fa);
int shiftfs_fiemap(struct inode *inode, struct fiemap_extent_info *fieinfo,
		   u64 start, u64 len);

/* dir.c */
extern const struct inode_operations shiftfs_dir_inode_ops;
extern const struct file_operations shiftfs_dir_ops;

/* file.c */
extern const struct file_operations shiftfs_file_ops;
int shiftfs_open(struct inode *inode, struct file *file);
int shiftfs_fsync(struct file *file, loff_t start, loff_t end, int datasync);
struct file *shiftfs_open_lower(struct file *file, const struct path *path,
				int flags);
long shiftfs_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
int shiftfs_flock(struct file *file, int cmd, struct file_lock *fl);

#endif /* _SHIFTFS_H */
