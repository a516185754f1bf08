/* SPDX-License-Identifier: GPL-2.0 */
/*
 * shiftfs is written against the newest kernel API (7.2).  Every kernel
 * version test lives in this file: it maps that API down to older kernels
 * (tested: Debian 6.1, 6.12 and 7.2; versions in between are best effort).
 */
#ifndef _SHIFTFS_COMPAT_H
#define _SHIFTFS_COMPAT_H

#include <linux/version.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/dcache.h>
#include <linux/mount.h>
#include <linux/cred.h>
#include <linux/proc_ns.h>
#include <linux/user_namespace.h>
#include <linux/mnt_idmapping.h>

/* the one place that reads the kernel version (major, patchlevel, sublevel) */
#define SHIFTFS_KV(a, b, c)	(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))
#define SHIFTFS_KERNEL_AT_LEAST(a, b, c) \
	(SHIFTFS_KV(LINUX_VERSION_MAJOR, LINUX_VERSION_PATCHLEVEL, \
		    LINUX_VERSION_SUBLEVEL) >= SHIFTFS_KV(a, b, c))

/* ---- idmappings: struct mnt_idmap appeared in 6.3 ---- */
#if !SHIFTFS_KERNEL_AT_LEAST(6, 3, 0)
#define mnt_idmap user_namespace
#define nop_mnt_idmap init_user_ns
static inline struct user_namespace *shiftfs_mnt_idmap(struct vfsmount *mnt)
{
	return mnt_user_ns(mnt);
}
#else
static inline struct mnt_idmap *shiftfs_mnt_idmap(struct vfsmount *mnt)
{
	return mnt_idmap(mnt);
}
#endif

/* ---- namespaces: ns_common.ns_type replaced ops->type ---- */
static inline bool shiftfs_ns_is_user(struct ns_common *ns)
{
#if SHIFTFS_KERNEL_AT_LEAST(6, 18, 0)
	return ns->ns_type == CLONE_NEWUSER;
#else
	return ns->ops && ns->ops->type == CLONE_NEWUSER;
#endif
}

/* ---- superblock ---- */
static inline void shiftfs_set_d_op(struct super_block *sb,
				    const struct dentry_operations *ops)
{
#if SHIFTFS_KERNEL_AT_LEAST(6, 17, 0)
	set_default_d_op(sb, ops);
#else
	sb->s_d_op = ops;
#endif
}

/* ---- inode state ---- */
#if SHIFTFS_KERNEL_AT_LEAST(7, 0, 0)
#define shiftfs_drop_inode inode_just_drop
static inline bool shiftfs_inode_is_new(struct inode *inode)
{
	return inode_state_read_once(inode) & I_NEW;
}
#else
#define shiftfs_drop_inode generic_delete_inode
static inline bool shiftfs_inode_is_new(struct inode *inode)
{
	return inode->i_state & I_NEW;
}
#endif

/* ---- inode timestamps ---- */
static inline void shiftfs_copy_times(struct inode *dst,
				      const struct inode *src)
{
#if SHIFTFS_KERNEL_AT_LEAST(6, 7, 0)
	inode_set_atime_to_ts(dst, inode_get_atime(src));
	inode_set_mtime_to_ts(dst, inode_get_mtime(src));
	inode_set_ctime_to_ts(dst, inode_get_ctime(src));
#else
	dst->i_atime = src->i_atime;
	dst->i_mtime = src->i_mtime;
	dst->i_ctime = src->i_ctime;
#endif
}

/* ---- dentry revalidation: 6.14 passes the parent and the name ---- */
#if SHIFTFS_KERNEL_AT_LEAST(6, 14, 0)
#define SHIFTFS_REVALIDATE_ARGS struct inode *dir, const struct qstr *name, \
				struct dentry *dentry, unsigned int flags
static inline int shiftfs_call_revalidate(struct dentry *lower,
					  unsigned int flags)
{
	struct name_snapshot n;
	struct dentry *parent;
	int ret;

	parent = dget_parent(lower);
	take_dentry_name_snapshot(&n, lower);
	ret = lower->d_op->d_revalidate(d_inode(parent), &n.name, lower,
					flags);
	release_dentry_name_snapshot(&n);
	dput(parent);
	return ret;
}
#else
#define SHIFTFS_REVALIDATE_ARGS struct dentry *dentry, unsigned int flags
static inline int shiftfs_call_revalidate(struct dentry *lower,
					  unsigned int flags)
{
	return lower->d_op->d_revalidate(lower, flags);
}
#endif

/* ---- lookup: 6.16 takes the name as a qstr ---- */
static inline struct dentry *shiftfs_lookup_one(struct mnt_idmap *idmap,
						const struct qstr *name,
						struct dentry *base)
{
#if SHIFTFS_KERNEL_AT_LEAST(6, 16, 0)
	struct qstr q = QSTR_INIT(name->name, name->len);

	return lookup_one_unlocked(idmap, &q, base);
#else
	return lookup_one_unlocked(idmap, name->name, base, name->len);
#endif
}

/* mkdir may hand back another dentry since 6.15 */
#if SHIFTFS_KERNEL_AT_LEAST(6, 15, 0)
#define SHIFTFS_MKDIR_RET struct dentry *
#define SHIFTFS_MKDIR_RETURN(err) ERR_PTR(err)
#else
#define SHIFTFS_MKDIR_RET int
#define SHIFTFS_MKDIR_RETURN(err) (err)
#endif

/*
 * ---- directory operations on the lower ----
 *
 * Uniform helpers with the 7.x semantics:
 * shiftfs_start_creating()/shiftfs_start_removing() look @name up in
 * @parent with @parent locked and return the child (or an ERR_PTR, with
 * nothing held); shiftfs_end_dirop() unlocks and drops the child.
 * shiftfs_vfs_mkdir() returns the new dentry, or an ERR_PTR after which
 * nothing is held any more (the child is dropped and the parent unlocked).
 */
#if SHIFTFS_KERNEL_AT_LEAST(7, 0, 0)
static inline struct dentry *shiftfs_start_creating(struct mnt_idmap *idmap,
						    struct dentry *parent,
						    const struct qstr *name)
{
	struct qstr q = QSTR_INIT(name->name, name->len);

	return start_creating(idmap, parent, &q);
}

static inline struct dentry *shiftfs_start_removing(struct mnt_idmap *idmap,
						    struct dentry *parent,
						    const struct qstr *name)
{
	struct qstr q = QSTR_INIT(name->name, name->len);

	return start_removing(idmap, parent, &q);
}

static inline void shiftfs_end_dirop(struct dentry *parent,
				     struct dentry *child)
{
	end_dirop(child);
}

static inline int shiftfs_vfs_create(struct mnt_idmap *idmap, struct inode *dir,
				     struct dentry *dentry, umode_t mode)
{
	return vfs_create(idmap, dentry, mode, NULL);
}

static inline struct dentry *shiftfs_vfs_mkdir(struct mnt_idmap *idmap,
					       struct inode *dir,
					       struct dentry *dentry,
					       umode_t mode)
{
	return vfs_mkdir(idmap, dir, dentry, mode, NULL);
}

static inline int shiftfs_vfs_mknod(struct mnt_idmap *idmap, struct inode *dir,
				    struct dentry *dentry, umode_t mode,
				    dev_t dev)
{
	return vfs_mknod(idmap, dir, dentry, mode, dev, NULL);
}

static inline int shiftfs_vfs_symlink(struct mnt_idmap *idmap,
				      struct inode *dir, struct dentry *dentry,
				      const char *target)
{
	return vfs_symlink(idmap, dir, dentry, target, NULL);
}

static inline int shiftfs_vfs_link(struct dentry *old, struct mnt_idmap *idmap,
				   struct inode *dir, struct dentry *new)
{
	return vfs_link(old, idmap, dir, new, NULL);
}

static inline int shiftfs_vfs_unlink(struct mnt_idmap *idmap,
				     struct inode *dir, struct dentry *dentry)
{
	return vfs_unlink(idmap, dir, dentry, NULL);
}

static inline int shiftfs_vfs_rmdir(struct mnt_idmap *idmap,
				    struct inode *dir, struct dentry *dentry)
{
	return vfs_rmdir(idmap, dir, dentry, NULL);
}

/*
 * Lock for a rename of @old (in @old_parent) to @new (in @new_parent), both
 * dentries we already hold; fails if either moved.  On success the lock
 * and references are dropped by shiftfs_end_rename().
 */
struct shiftfs_rename {
	struct renamedata rd;
};

static inline int shiftfs_start_rename(struct shiftfs_rename *r,
				       struct mnt_idmap *idmap,
				       struct dentry *old_parent,
				       struct dentry *old,
				       struct dentry *new_parent,
				       struct dentry *new, unsigned int flags)
{
	struct renamedata *rd = &r->rd;

	rd->mnt_idmap = idmap;
	rd->old_parent = old_parent;
	rd->new_parent = new_parent;
	rd->flags = flags;
	rd->delegated_inode = NULL;
	return start_renaming_two_dentries(rd, old, new);
}

static inline void shiftfs_end_rename(struct shiftfs_rename *r)
{
	end_renaming(&r->rd);
}
#else /* < 7.0 */
static inline struct dentry *shiftfs_start_creating(struct mnt_idmap *idmap,
						    struct dentry *parent,
						    const struct qstr *name)
{
	struct dentry *child;

	inode_lock_nested(d_inode(parent), I_MUTEX_PARENT);
#if SHIFTFS_KERNEL_AT_LEAST(6, 16, 0)
	child = lookup_one(idmap, (struct qstr *)name, parent);
#else
	child = lookup_one(idmap, name->name, parent, name->len);
#endif
	if (IS_ERR(child))
		inode_unlock(d_inode(parent));
	return child;
}

static inline struct dentry *shiftfs_start_removing(struct mnt_idmap *idmap,
						    struct dentry *parent,
						    const struct qstr *name)
{
	struct dentry *child = shiftfs_start_creating(idmap, parent, name);

	if (!IS_ERR(child) && d_is_negative(child)) {
		dput(child);
		inode_unlock(d_inode(parent));
		return ERR_PTR(-ENOENT);
	}
	return child;
}

static inline void shiftfs_end_dirop(struct dentry *parent,
				     struct dentry *child)
{
	dput(child);
	inode_unlock(d_inode(parent));
}

static inline int shiftfs_vfs_create(struct mnt_idmap *idmap, struct inode *dir,
				     struct dentry *dentry, umode_t mode)
{
	return vfs_create(idmap, dir, dentry, mode, true);
}

static inline struct dentry *shiftfs_vfs_mkdir(struct mnt_idmap *idmap,
					       struct inode *dir,
					       struct dentry *dentry,
					       umode_t mode)
{
#if SHIFTFS_KERNEL_AT_LEAST(6, 15, 0)
	struct dentry *de = vfs_mkdir(idmap, dir, dentry, mode);

	/* vfs_mkdir() already dropped @dentry on error */
	if (IS_ERR(de))
		inode_unlock(dir);
	return de;
#else
	int err = vfs_mkdir(idmap, dir, dentry, mode);

	if (err) {
		dput(dentry);
		inode_unlock(dir);
		return ERR_PTR(err);
	}
	return dentry;
#endif
}

static inline int shiftfs_vfs_mknod(struct mnt_idmap *idmap, struct inode *dir,
				    struct dentry *dentry, umode_t mode,
				    dev_t dev)
{
	return vfs_mknod(idmap, dir, dentry, mode, dev);
}

static inline int shiftfs_vfs_symlink(struct mnt_idmap *idmap,
				      struct inode *dir, struct dentry *dentry,
				      const char *target)
{
	return vfs_symlink(idmap, dir, dentry, target);
}

static inline int shiftfs_vfs_link(struct dentry *old, struct mnt_idmap *idmap,
				   struct inode *dir, struct dentry *new)
{
	return vfs_link(old, idmap, dir, new, NULL);
}

static inline int shiftfs_vfs_unlink(struct mnt_idmap *idmap,
				     struct inode *dir, struct dentry *dentry)
{
	return vfs_unlink(idmap, dir, dentry, NULL);
}

static inline int shiftfs_vfs_rmdir(struct mnt_idmap *idmap,
				    struct inode *dir, struct dentry *dentry)
{
	return vfs_rmdir(idmap, dir, dentry);
}

struct shiftfs_rename {
	struct renamedata rd;
	struct dentry *old_parent;
	struct dentry *new_parent;
};

static inline int shiftfs_start_rename(struct shiftfs_rename *r,
				       struct mnt_idmap *idmap,
				       struct dentry *old_parent,
				       struct dentry *old,
				       struct dentry *new_parent,
				       struct dentry *new, unsigned int flags)
{
	struct renamedata *rd = &r->rd;
	struct dentry *trap;
	int err = -EINVAL;

	trap = lock_rename_child(old, new_parent);
	if (IS_ERR(trap))
		return PTR_ERR(trap);
	if (d_unhashed(old) || old->d_parent != old_parent ||
	    d_unhashed(new) || new->d_parent != new_parent)
		goto out_unlock;
	if (old == trap)
		goto out_unlock;
	if (new == trap) {
		err = (flags & RENAME_EXCHANGE) ? -EINVAL : -ENOTEMPTY;
		goto out_unlock;
	}
	err = -EEXIST;
	if (d_is_positive(new) && (flags & RENAME_NOREPLACE))
		goto out_unlock;
#if SHIFTFS_KERNEL_AT_LEAST(6, 3, 0)
	rd->old_mnt_idmap = idmap;
	rd->new_mnt_idmap = idmap;
#else
	rd->old_mnt_userns = idmap;
	rd->new_mnt_userns = idmap;
#endif
	rd->old_dir = d_inode(old_parent);
	rd->new_dir = d_inode(new_parent);
	rd->old_dentry = dget(old);
	rd->new_dentry = dget(new);
	rd->delegated_inode = NULL;
	rd->flags = flags;
	/* the parents as locked: vfs_rename() moves old to new_parent */
	r->old_parent = dget(old_parent);
	r->new_parent = dget(new_parent);
	return 0;

out_unlock:
	unlock_rename(old->d_parent, new_parent);
	return err;
}

static inline void shiftfs_end_rename(struct shiftfs_rename *r)
{
	unlock_rename(r->old_parent, r->new_parent);
	dput(r->old_parent);
	dput(r->new_parent);
	dput(r->rd.old_dentry);
	dput(r->rd.new_dentry);
}
#endif /* < 7.0 */

/*
 * Kernels 6.7 to 6.x pass AT_GETATTR_NOSEC down to stacked filesystems
 * when the security check was already made; vfs_getattr() refuses it.
 */
static inline int shiftfs_vfs_getattr(const struct path *path,
				      struct kstat *stat, u32 mask,
				      unsigned int flags)
{
#ifdef AT_GETATTR_NOSEC
	if (flags & AT_GETATTR_NOSEC)
		return vfs_getattr_nosec(path, stat, mask, flags);
#endif
	return vfs_getattr(path, stat, mask, flags);
}

static inline int shiftfs_notify_change(struct mnt_idmap *idmap,
					struct dentry *dentry,
					struct iattr *attr)
{
	return notify_change(idmap, dentry, attr, NULL);
}

/*
 * ---- I/O on the lower file ----
 *
 * From 6.12 on the lower file is a backing file and the I/O goes through
 * the backing_file helpers; before that, a plain file and synchronous
 * vfs_iter_read()/vfs_iter_write().
 */
void shiftfs_file_accessed(struct file *user_file);
void shiftfs_file_end_write(struct file *user_file);

#if SHIFTFS_KERNEL_AT_LEAST(6, 12, 0)
#include <linux/backing-file.h>
#define SHIFTFS_BACKING_FILE 1

static inline struct file *shiftfs_backing_open(struct file *user_file,
						int flags,
						const struct path *real,
						const struct cred *cred)
{
	return backing_file_open(user_file, flags, real, cred);
}

static inline struct file *shiftfs_backing_tmpfile(struct file *user_file,
						   struct mnt_idmap *idmap,
						   const struct path *parent,
						   umode_t mode, int flags,
						   const struct cred *cred)
{
	return backing_tmpfile_open(user_file, flags, parent, mode, cred);
}

#define shiftfs_splice_read copy_splice_read

#if SHIFTFS_KERNEL_AT_LEAST(6, 18, 0)
static inline void shiftfs_bf_end_write(struct kiocb *iocb, ssize_t ret)
{
	shiftfs_file_end_write(iocb->ki_filp);
}

#define SHIFTFS_BF_CTX(name, c, ufile) \
	struct backing_file_ctx name = { \
		.cred = (c), \
		.accessed = shiftfs_file_accessed, \
		.end_write = shiftfs_bf_end_write, \
	}
#else
static inline void shiftfs_bf_end_write(struct file *file, loff_t pos, ssize_t ret)
{
	shiftfs_file_end_write(file);
}

#define SHIFTFS_BF_CTX(name, c, ufile) \
	struct backing_file_ctx name = { \
		.cred = (c), \
		.user_file = (ufile), \
		.accessed = shiftfs_file_accessed, \
		.end_write = shiftfs_bf_end_write, \
	}
#endif

static inline ssize_t shiftfs_lower_read_iter(struct file *real,
					      struct kiocb *iocb,
					      struct iov_iter *iter,
					      const struct cred *cred)
{
	SHIFTFS_BF_CTX(ctx, cred, iocb->ki_filp);

	return backing_file_read_iter(real, iter, iocb, iocb->ki_flags, &ctx);
}

static inline ssize_t shiftfs_lower_write_iter(struct file *real,
					       struct kiocb *iocb,
					       struct iov_iter *iter,
					       const struct cred *cred)
{
	SHIFTFS_BF_CTX(ctx, cred, iocb->ki_filp);

	return backing_file_write_iter(real, iter, iocb, iocb->ki_flags,
				       &ctx);
}

static inline int shiftfs_lower_mmap(struct file *user_file,
				     struct file *real,
				     struct vm_area_struct *vma,
				     const struct cred *cred)
{
	SHIFTFS_BF_CTX(ctx, cred, user_file);

	return backing_file_mmap(real, vma, &ctx);
}
#else /* < 6.12 */
static inline struct file *shiftfs_backing_open(struct file *user_file,
						int flags,
						const struct path *real,
						const struct cred *cred)
{
	return dentry_open(real, flags, cred);
}

static inline struct file *shiftfs_backing_tmpfile(struct file *user_file,
						   struct mnt_idmap *idmap,
						   const struct path *parent,
						   umode_t mode, int flags,
						   const struct cred *cred)
{
	return vfs_tmpfile_open(idmap, parent, mode, flags, cred);
}

#define shiftfs_splice_read generic_file_splice_read

/*
 * Before 6.12 io_uring takes any regular file of a filesystem without a
 * block device for non-blocking, whatever its FMODE_NOWAIT, and issues
 * IOCB_NOWAIT I/O to it; a lower file without FMODE_NOWAIT would refuse
 * RWF_NOWAIT and send every such request to io_uring's workers.  The lower
 * itself, asked directly, ignores IOCB_NOWAIT: so does the I/O passed on.
 * RWF_NOWAIT from preadv2() cannot get here then (our file lacks
 * FMODE_NOWAIT too).
 */
static inline rwf_t shiftfs_iocb_rwf(struct file *real, int ifl)
{
	rwf_t flags = 0;

	if ((ifl & IOCB_NOWAIT) && (real->f_mode & FMODE_NOWAIT))
		flags |= RWF_NOWAIT;
	if (ifl & IOCB_HIPRI)
		flags |= RWF_HIPRI;
	if (ifl & IOCB_DSYNC)
		flags |= RWF_DSYNC;
	if (ifl & IOCB_SYNC)
		flags |= RWF_SYNC;
	return flags;
}

static inline ssize_t shiftfs_lower_read_iter(struct file *real,
					      struct kiocb *iocb,
					      struct iov_iter *iter,
					      const struct cred *cred)
{
	const struct cred *old = override_creds(cred);
	ssize_t ret;

	ret = vfs_iter_read(real, iter, &iocb->ki_pos,
			    shiftfs_iocb_rwf(real, iocb->ki_flags));
	revert_creds(old);
	shiftfs_file_accessed(iocb->ki_filp);
	return ret;
}

static inline ssize_t shiftfs_lower_write_iter(struct file *real,
					       struct kiocb *iocb,
					       struct iov_iter *iter,
					       const struct cred *cred)
{
	const struct cred *old;
	ssize_t ret;

	ret = file_remove_privs(iocb->ki_filp);
	if (ret)
		return ret;
	if (iocb->ki_flags & IOCB_APPEND)
		iocb->ki_pos = i_size_read(file_inode(real));
	old = override_creds(cred);
	ret = vfs_iter_write(real, iter, &iocb->ki_pos,
			     shiftfs_iocb_rwf(real, iocb->ki_flags));
	revert_creds(old);
	shiftfs_file_end_write(iocb->ki_filp);
	return ret;
}

static inline int shiftfs_lower_mmap(struct file *user_file,
				     struct file *real,
				     struct vm_area_struct *vma,
				     const struct cred *cred)
{
	const struct cred *old;
	int ret;

	if (!real->f_op->mmap)
		return -ENODEV;
	vma_set_file(vma, real);
	old = override_creds(cred);
	ret = call_mmap(real, vma);
	revert_creds(old);
	shiftfs_file_accessed(user_file);
	return ret;
}
#endif /* < 6.12 */

/*
 * ---- POSIX ACLs ----
 *
 * 6.2 split the ACL inode operations: ->get_inode_acl(inode, type, rcu)
 * for permission checks, ->get_acl(idmap, dentry, type) and
 * ->set_acl(idmap, dentry, acl, type) for the xattr system calls, and
 * vfs_set_acl()/vfs_remove_acl() for stacked filesystems.  Before, one
 * ->get_acl(inode, type, rcu), and ACLs travel as xattrs: there the
 * system.posix_acl_* xattr handlers of shiftfs call shiftfs_set_acl().
 */
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <linux/xattr.h>
#include <linux/slab.h>

struct posix_acl *shiftfs_get_inode_acl(struct inode *inode, int type,
					bool rcu);
struct posix_acl *shiftfs_get_acl(struct mnt_idmap *idmap,
				  struct dentry *dentry, int type);
int shiftfs_set_acl(struct mnt_idmap *idmap, struct dentry *dentry,
		    struct posix_acl *acl, int type);

/*
 * @acl as an xattr value in @buf of @size bytes (0: just the size), as
 * the initial user namespace numbers the ids; 6.19 made
 * posix_acl_to_xattr() allocate the value.
 */
static inline int shiftfs_acl_to_xattr(const struct posix_acl *acl,
				       void *buf, size_t size)
{
#if SHIFTFS_KERNEL_AT_LEAST(6, 19, 0)
	size_t len;
	void *val = posix_acl_to_xattr(&init_user_ns, acl, &len, GFP_KERNEL);

	if (!val)
		return -ENOMEM;
	if (size && size < len)
		len = -ERANGE;
	else if (size)
		memcpy(buf, val, len);
	kfree(val);
	return len;
#else
	return posix_acl_to_xattr(&init_user_ns, acl, buf, size);
#endif
}

static inline const char *shiftfs_acl_xattr_name(int type)
{
	return type == ACL_TYPE_ACCESS ? XATTR_NAME_POSIX_ACL_ACCESS :
					 XATTR_NAME_POSIX_ACL_DEFAULT;
}

#if SHIFTFS_KERNEL_AT_LEAST(6, 2, 0)
#define SHIFTFS_ACL_INODE_OPS \
	.get_inode_acl	= shiftfs_get_inode_acl, \
	.get_acl	= shiftfs_get_acl, \
	.set_acl	= shiftfs_set_acl

static inline struct posix_acl *shiftfs_lower_inode_acl(struct inode *lower,
							int type)
{
	return get_inode_acl(lower, type);
}

/* @acl holds ids as the lower mount shows them (it is consumed) */
static inline int shiftfs_lower_set_acl(struct mnt_idmap *idmap,
					struct dentry *lower, int type,
					struct posix_acl *acl)
{
	const char *name = shiftfs_acl_xattr_name(type);

	if (!acl)
		return vfs_remove_acl(idmap, lower, name);
	return vfs_set_acl(idmap, lower, name, acl);
}
#else
#define SHIFTFS_ACL_INODE_OPS \
	.get_acl	= shiftfs_get_inode_acl

static inline struct posix_acl *shiftfs_lower_inode_acl(struct inode *lower,
							int type)
{
	return get_acl(lower, type);
}

static inline int shiftfs_lower_set_acl(struct mnt_idmap *idmap,
					struct dentry *lower, int type,
					struct posix_acl *acl)
{
	const char *name = shiftfs_acl_xattr_name(type);
	size_t size;
	void *buf;
	int err;

	if (!acl)
		return vfs_removexattr(idmap, lower, name);
	size = posix_acl_xattr_size(acl->a_count);
	buf = kmalloc(size, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	err = shiftfs_acl_to_xattr(acl, buf, size);
	if (err >= 0)
		err = vfs_setxattr(idmap, lower, name, buf, size, 0);
	kfree(buf);
	return err;
}
#endif

/* the VFS must ask ->get_inode_acl() every time: the lower may change */
static inline void shiftfs_inode_acl_nocache(struct inode *inode)
{
#ifdef CONFIG_FS_POSIX_ACL
	inode->i_acl = ACL_DONT_CACHE;
	inode->i_default_acl = ACL_DONT_CACHE;
#endif
}

/* ---- fileattr: struct fileattr became struct file_kattr in 6.17 ---- */
#include <linux/fileattr.h>
#if SHIFTFS_KERNEL_AT_LEAST(6, 17, 0)
#define shiftfs_fileattr file_kattr
#else
#define shiftfs_fileattr fileattr
#endif

/* ---- file locks: the common part moved to fl->c in 6.9 ---- */
#if SHIFTFS_KERNEL_AT_LEAST(6, 9, 0)
#include <linux/filelock.h>
static inline void shiftfs_flock_retarget(struct file_lock *fl,
					  struct file *real)
{
	fl->c.flc_file = real;
	fl->c.flc_owner = real;
}

/* swap the file a lock request is made through; returns the old one */
static inline struct file *shiftfs_lock_set_file(struct file_lock *fl,
						 struct file *file)
{
	struct file *old = fl->c.flc_file;

	fl->c.flc_file = file;
	return old;
}
#else
static inline void shiftfs_flock_retarget(struct file_lock *fl,
					  struct file *real)
{
	fl->fl_file = real;
	fl->fl_owner = real;
}

static inline struct file *shiftfs_lock_set_file(struct file_lock *fl,
						 struct file *file)
{
	struct file *old = fl->fl_file;

	fl->fl_file = file;
	return old;
}
#endif

#endif /* _SHIFTFS_COMPAT_H */
