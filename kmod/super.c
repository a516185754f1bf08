// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs: filesystem type, superblock, stacked inodes and dentries.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/statfs.h>
#include <linux/namei.h>
#include "shiftfs.h"

static struct kmem_cache *shiftfs_inode_cachep;

static const char *const shiftfs_writers_name[SB_FREEZE_LEVELS] = {
	"shiftfs_sb_writers",
	"shiftfs_sb_pagefaults",
	"shiftfs_sb_internal",
};

/*
 * Give the superblock's freeze locks classes of its own (see struct
 * shiftfs_lock_keys); they are not held before fill_super returns.
 */
static void shiftfs_lockdep_register(struct super_block *sb,
				     struct shiftfs_lock_keys *keys)
{
	int i;

	lockdep_register_key(&keys->dir);
	lockdep_register_key(&keys->nondir);
	for (i = 0; i < SB_FREEZE_LEVELS; i++) {
		lockdep_register_key(&keys->writers[i]);
		lockdep_set_class_and_name(&sb->s_writers.rw_sem[i],
					   &keys->writers[i],
					   shiftfs_writers_name[i]);
	}
}

/* once every inode is gone and no freeze lock can be taken again */
static void shiftfs_lockdep_unregister(struct shiftfs_lock_keys *keys)
{
	int i;

	for (i = 0; i < SB_FREEZE_LEVELS; i++)
		lockdep_unregister_key(&keys->writers[i]);
	lockdep_unregister_key(&keys->nondir);
	lockdep_unregister_key(&keys->dir);
}

static void shiftfs_lockdep_annotate(struct inode *inode)
{
	struct shiftfs_lock_keys *keys = &SHIFTFS_SB(inode->i_sb)->keys;

	if (S_ISDIR(inode->i_mode))
		lockdep_set_class_and_name(&inode->i_rwsem, &keys->dir,
					   "shiftfs_i_rwsem_dir");
	else
		lockdep_set_class_and_name(&inode->i_rwsem, &keys->nondir,
					   "shiftfs_i_rwsem");
}

/* ---- dentries ---- */

/*
 * Take a reference on the current lower dentry of @dentry.  No d_lock of
 * ours is held while the lower's lockref is taken (that would nest two
 * d_locks of one class).  Under RCU the lower is not freed; it cannot die
 * while it is our d_fsdata, as we hold a reference on it then, so a dead
 * one was swapped out by shiftfs_set_lower(), as was one that is no longer
 * our d_fsdata once we hold it: read the new one.
 */
static struct dentry *shiftfs_get_lower(struct dentry *dentry)
{
	struct dentry *lower;
	bool held;

	for (;;) {
		rcu_read_lock();
		lower = READ_ONCE(dentry->d_fsdata);
		held = lower && lockref_get_not_dead(&lower->d_lockref);
		rcu_read_unlock();
		if (!lower)
			return NULL;
		if (!held)
			continue;
		if (likely(READ_ONCE(dentry->d_fsdata) == lower))
			return lower;
		dput(lower);
	}
}

/*
 * Give @dentry the lower dentry @lower (the caller's reference moves to
 * @dentry).  The old one stays valid for RCU walkers: dentries are freed
 * after a grace period.
 */
void shiftfs_set_lower(struct dentry *dentry, struct dentry *lower)
{
	struct dentry *old;

	spin_lock(&dentry->d_lock);
	old = dentry->d_fsdata;
	WRITE_ONCE(dentry->d_fsdata, lower);
	spin_unlock(&dentry->d_lock);
	dput(old);
}

/* Does the stacked @dentry still describe @lower?  Safe in RCU walk. */
static int shiftfs_lower_matches(struct dentry *dentry, struct dentry *lower)
{
	struct inode *inode = d_inode_rcu(dentry);
	struct inode *linode = d_inode_rcu(lower);

	if (!IS_ROOT(lower) && d_unhashed(lower))
		return 0;
	if (!inode)
		return linode ? 0 : 1;
	if (!linode || linode != shiftfs_lower_inode(inode))
		return 0;
	return 1;
}

static int shiftfs_d_revalidate(SHIFTFS_REVALIDATE_ARGS)
{
	struct dentry *lower;
	int ret;

	if (flags & LOOKUP_RCU) {
		lower = READ_ONCE(dentry->d_fsdata);
		if (!lower || (lower->d_flags & DCACHE_OP_REVALIDATE))
			return -ECHILD;
		return shiftfs_lower_matches(dentry, lower);
	}

	lower = shiftfs_get_lower(dentry);
	if (!lower)
		return 0;
	ret = shiftfs_lower_matches(dentry, lower);
	if (ret > 0 && (lower->d_flags & DCACHE_OP_REVALIDATE))
		ret = shiftfs_call_revalidate(lower, flags);
	if (ret > 0 && d_really_is_positive(dentry))
		shiftfs_copyattr(d_inode(dentry));
	dput(lower);
	return ret;
}

static int shiftfs_d_weak_revalidate(struct dentry *dentry, unsigned int flags)
{
	struct dentry *lower = shiftfs_get_lower(dentry);
	int ret = 1;

	if (!lower)
		return 1;
	if (lower->d_flags & DCACHE_OP_WEAK_REVALIDATE)
		ret = lower->d_op->d_weak_revalidate(lower, flags);
	dput(lower);
	return ret;
}

static void shiftfs_d_release(struct dentry *dentry)
{
	dput(dentry->d_fsdata);
}

const struct dentry_operations shiftfs_dentry_ops = {
	.d_revalidate		= shiftfs_d_revalidate,
	.d_weak_revalidate	= shiftfs_d_weak_revalidate,
	.d_release		= shiftfs_d_release,
};

/* ---- inodes ---- */

static int shiftfs_inode_test(struct inode *inode, void *lower)
{
	return SHIFTFS_I(inode)->lower == lower;
}

static int shiftfs_inode_set(struct inode *inode, void *data)
{
	struct inode *lower = data;

	ihold(lower);
	SHIFTFS_I(inode)->lower = lower;
	inode->i_ino = lower->i_ino;
	return 0;
}

/* The one shiftfs inode stacked over @lower, created on first use. */
struct inode *shiftfs_iget(struct super_block *sb, struct inode *lower)
{
	struct inode *inode;

	inode = iget5_locked(sb, (unsigned long)lower, shiftfs_inode_test,
			     shiftfs_inode_set, lower);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (!shiftfs_inode_is_new(inode)) {
		shiftfs_copyattr(inode);
		return inode;
	}

	inode->i_mode = lower->i_mode & S_IFMT;
	inode->i_rdev = lower->i_rdev;
	inode->i_generation = lower->i_generation;
	shiftfs_inode_acl_nocache(inode);
	switch (lower->i_mode & S_IFMT) {
	case S_IFDIR:
		inode->i_op = &shiftfs_dir_inode_ops;
		inode->i_fop = &shiftfs_dir_ops;
		break;
	case S_IFREG:
		inode->i_op = &shiftfs_file_inode_ops;
		inode->i_fop = &shiftfs_file_ops;
		break;
	case S_IFLNK:
		inode->i_op = &shiftfs_symlink_inode_ops;
		break;
	default:
		inode->i_op = &shiftfs_special_inode_ops;
		init_special_inode(inode, lower->i_mode, lower->i_rdev);
		break;
	}
	shiftfs_copyattr(inode);
	shiftfs_lockdep_annotate(inode);
	unlock_new_inode(inode);
	return inode;
}

static struct inode *shiftfs_alloc_inode(struct super_block *sb)
{
	struct shiftfs_inode *si;

	si = alloc_inode_sb(sb, shiftfs_inode_cachep, GFP_KERNEL);
	if (!si)
		return NULL;
	si->lower = NULL;
	si->ids_valid = false;
	return &si->vfs_inode;
}

static void shiftfs_free_inode(struct inode *inode)
{
	kmem_cache_free(shiftfs_inode_cachep, SHIFTFS_I(inode));
}

static void shiftfs_evict_inode(struct inode *inode)
{
	struct inode *lower = SHIFTFS_I(inode)->lower;

	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	iput(lower);
}

static int shiftfs_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	struct path path;
	int err;

	shiftfs_lower_path(dentry, &path);
	err = vfs_statfs(&path, buf);
	if (!err)
		buf->f_type = SHIFTFS_MAGIC;
	return err;
}

static const struct super_operations shiftfs_super_ops = {
	.alloc_inode	= shiftfs_alloc_inode,
	.free_inode	= shiftfs_free_inode,
	.evict_inode	= shiftfs_evict_inode,
	.drop_inode	= shiftfs_drop_inode,
	.statfs		= shiftfs_statfs,
	.show_options	= shiftfs_show_options,
};

/* ---- superblock ---- */

int shiftfs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct shiftfs_sb_info *sbi;
	struct super_block *lower_sb;
	struct inode *inode;
	int err;

	sbi = kzalloc(sizeof(*sbi), GFP_KERNEL);
	if (!sbi)
		return -ENOMEM;
	sb->s_fs_info = sbi;
	shiftfs_lockdep_register(sb, &sbi->keys);
	shiftfs_cred_cache_init(&sbi->creds);

	err = shiftfs_fill_super_maps(fc, sbi);
	if (err)
		return err;
	if (!fc->source || !*fc->source)
		return shiftfs_lower_error(fc, NULL, 0);
	err = kern_path(fc->source, LOOKUP_FOLLOW | LOOKUP_DIRECTORY,
			&sbi->lower);
	if (err)
		return shiftfs_lower_error(fc, fc->source, err);

	lower_sb = sbi->lower.dentry->d_sb;
	sb->s_stack_depth = lower_sb->s_stack_depth + 1;
	if (sb->s_stack_depth > FILESYSTEM_MAX_STACK_DEPTH)
		return shiftfs_lower_error(fc, fc->source, -ELOOP);

	sb->s_magic = SHIFTFS_MAGIC;
	sb->s_op = &shiftfs_super_ops;
	sb->s_xattr = shiftfs_xattr_handlers;
	/* umask and default ACLs are the lower's business if it has ACLs */
	sb->s_flags |= lower_sb->s_flags & SB_POSIXACL;
	shiftfs_set_d_op(sb, &shiftfs_dentry_ops);
	sb->s_maxbytes = lower_sb->s_maxbytes;
	sb->s_time_gran = lower_sb->s_time_gran;
	sb->s_blocksize = lower_sb->s_blocksize;
	sb->s_blocksize_bits = lower_sb->s_blocksize_bits;

	inode = shiftfs_iget(sb, d_inode(sbi->lower.dentry));
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	sb->s_root = d_make_root(inode);
	if (!sb->s_root)
		return -ENOMEM;
	sb->s_root->d_fsdata = dget(sbi->lower.dentry);
	return 0;
}

static void shiftfs_kill_sb(struct super_block *sb)
{
	struct shiftfs_sb_info *sbi = sb->s_fs_info;

	kill_anon_super(sb);
	if (!sbi)
		return;
	shiftfs_cred_cache_free(&sbi->creds);
	path_put(&sbi->lower);
	shiftfs_map_free(&sbi->uid_map);
	shiftfs_map_free(&sbi->gid_map);
	shiftfs_lockdep_unregister(&sbi->keys);
	kfree(sbi);
}

/*
 * No FS_USERNS_MOUNT: only CAP_SYS_ADMIN in the initial user namespace
 * may mount.  .owner pins the module while a superblock exists, so rmmod
 * fails with EBUSY while anything is mounted.
 */
static struct file_system_type shiftfs_type = {
	.owner			= THIS_MODULE,
	.name			= SHIFTFS_NAME,
	.init_fs_context	= shiftfs_init_fs_context,
	.kill_sb		= shiftfs_kill_sb,
};
MODULE_ALIAS_FS(SHIFTFS_NAME);

static void shiftfs_inode_init_once(void *data)
{
	struct shiftfs_inode *si = data;

	inode_init_once(&si->vfs_inode);
}

static int __init shiftfs_init(void)
{
	int err;

	shiftfs_inode_cachep = kmem_cache_create("shiftfs_inode",
						 sizeof(struct shiftfs_inode),
						 0, SLAB_RECLAIM_ACCOUNT |
						 SLAB_ACCOUNT,
						 shiftfs_inode_init_once);
	if (!shiftfs_inode_cachep)
		return -ENOMEM;
	err = register_filesystem(&shiftfs_type);
	if (err)
		goto out_cache;
	return 0;

out_cache:
	kmem_cache_destroy(shiftfs_inode_cachep);
	return err;
}

static void __exit shiftfs_exit(void)
{
	unregister_filesystem(&shiftfs_type);
	/* inodes are freed after an RCU grace period */
	rcu_barrier();
	kmem_cache_destroy(shiftfs_inode_cachep);
}

module_init(shiftfs_init);
module_exit(shiftfs_exit);
MODULE_DESCRIPTION("id-shifting stacking filesystem");
MODULE_LICENSE("GPL");
