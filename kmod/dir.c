// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs: directory inode operations (lookup and the namespace
 * operations) and directory file operations.
 *
 * The VFS has locked the shiftfs directories and checked the operation on
 * the view; each operation here redoes it on the lower with the lower
 * credentials (see shiftfs_get_creds()) and the lower mount's idmapping.
 */
#include <linux/file.h>
#include <linux/namei.h>
#include "shiftfs.h"

static struct dentry *shiftfs_lookup(struct inode *dir, struct dentry *dentry,
				     unsigned int flags)
{
	struct super_block *sb = dir->i_sb;
	struct dentry *lower_parent = shiftfs_lower(dentry->d_parent);
	struct inode *inode = NULL;
	struct shiftfs_creds sc;
	struct dentry *lower;
	int err;

	err = shiftfs_override_creds(sb, &dir, 1, &sc);
	if (err)
		return ERR_PTR(err);
	lower = shiftfs_lookup_one(shiftfs_lower_idmap(sb), &dentry->d_name,
				   lower_parent);
	shiftfs_revert_creds(&sc);
	if (IS_ERR(lower))
		return ERR_CAST(lower);

	if (d_really_is_positive(lower)) {
		inode = shiftfs_iget(sb, d_inode(lower));
		if (IS_ERR(inode)) {
			dput(lower);
			return ERR_CAST(inode);
		}
	}
	dentry->d_fsdata = lower;
	return d_splice_alias(inode, dentry);
}

/* Attach the new lower object @lower to the negative @dentry. */
static int shiftfs_instantiate(struct dentry *dentry, struct dentry *lower)
{
	struct inode *inode;

	if (d_really_is_negative(lower))
		return -ENOENT;
	inode = shiftfs_iget(dentry->d_sb, d_inode(lower));
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	shiftfs_set_lower(dentry, dget(lower));
	d_instantiate(dentry, inode);
	return 0;
}

/*
 * The create family: a new lower object named like @dentry in the lower
 * of its parent, of type @mode (or a hard link to @old).  The disk owner
 * comes from the lower credentials: the caller's fsuid/fsgid mapped to
 * disk ids, or the lower parent's gid under setgid, as the lower decides.
 */
static int shiftfs_create_object(struct inode *dir, struct dentry *dentry,
				 umode_t mode, dev_t rdev, const char *symname,
				 struct dentry *old)
{
	struct super_block *sb = dir->i_sb;
	struct mnt_idmap *idmap = shiftfs_lower_idmap(sb);
	struct dentry *lower_parent = shiftfs_lower(dentry->d_parent);
	struct inode *lower_dir = d_inode(lower_parent);
	struct inode *objs[2] = { dir, old ? d_inode(old) : NULL };
	struct shiftfs_creds sc;
	struct dentry *child;
	int err;

	err = shiftfs_caller_mapped(sb);
	if (err)
		return err;
	err = shiftfs_start_change(sb, objs, ARRAY_SIZE(objs), &sc);
	if (err)
		return err;

	child = shiftfs_start_creating(idmap, lower_parent, &dentry->d_name);
	if (IS_ERR(child)) {
		err = PTR_ERR(child);
		goto out_drop;
	}
	err = -EEXIST;
	if (d_is_positive(child))
		goto out_end;

	if (old) {
		err = shiftfs_vfs_link(shiftfs_lower(old), idmap, lower_dir,
				       child);
	} else {
		switch (mode & S_IFMT) {
		case S_IFDIR:
			child = shiftfs_vfs_mkdir(idmap, lower_dir, child, mode);
			if (IS_ERR(child)) {
				/* nothing is held any more */
				err = PTR_ERR(child);
				goto out_drop;
			}
			err = 0;
			break;
		case S_IFREG:
			err = shiftfs_vfs_create(idmap, lower_dir, child, mode);
			break;
		case S_IFLNK:
			err = shiftfs_vfs_symlink(idmap, lower_dir, child,
						  symname);
			break;
		default:
			err = shiftfs_vfs_mknod(idmap, lower_dir, child, mode,
						rdev);
			break;
		}
	}
	if (!err)
		err = shiftfs_instantiate(dentry, child);
out_end:
	shiftfs_end_dirop(lower_parent, child);
out_drop:
	shiftfs_end_change(sb, &sc);
	shiftfs_copyattr(dir);
	if (old && d_really_is_positive(old))
		shiftfs_copyattr(d_inode(old));
	return err;
}

static int shiftfs_create(struct mnt_idmap *idmap, struct inode *dir,
			  struct dentry *dentry, umode_t mode, bool excl)
{
	return shiftfs_create_object(dir, dentry, (mode & 07777) | S_IFREG, 0,
				     NULL, NULL);
}

static SHIFTFS_MKDIR_RET shiftfs_mkdir(struct mnt_idmap *idmap,
				       struct inode *dir,
				       struct dentry *dentry, umode_t mode)
{
	return SHIFTFS_MKDIR_RETURN(shiftfs_create_object(dir, dentry,
							  (mode & 07777) | S_IFDIR,
							  0, NULL, NULL));
}

static int shiftfs_mknod(struct mnt_idmap *idmap, struct inode *dir,
			 struct dentry *dentry, umode_t mode, dev_t rdev)
{
	/* fifos, sockets, devices and 0/0 whiteouts alike */
	return shiftfs_create_object(dir, dentry, mode, rdev, NULL, NULL);
}

static int shiftfs_symlink(struct mnt_idmap *idmap, struct inode *dir,
			   struct dentry *dentry, const char *symname)
{
	return shiftfs_create_object(dir, dentry, S_IFLNK | 0777, 0, symname,
				     NULL);
}

static int shiftfs_link(struct dentry *old, struct inode *dir,
			struct dentry *dentry)
{
	return shiftfs_create_object(dir, dentry, 0, 0, NULL, old);
}

static int shiftfs_remove(struct inode *dir, struct dentry *dentry, bool rmdir)
{
	struct super_block *sb = dir->i_sb;
	struct mnt_idmap *idmap = shiftfs_lower_idmap(sb);
	struct dentry *lower_parent = shiftfs_lower(dentry->d_parent);
	struct inode *inode = d_inode(dentry);
	struct inode *objs[2] = { dir, inode };
	struct shiftfs_creds sc;
	struct dentry *child;
	int err;

	err = shiftfs_start_change(sb, objs, ARRAY_SIZE(objs), &sc);
	if (err)
		return err;
	child = shiftfs_start_removing(idmap, lower_parent, &dentry->d_name);
	if (IS_ERR(child)) {
		err = PTR_ERR(child);
		goto out_drop;
	}
	if (child != shiftfs_lower(dentry))
		err = -ESTALE;	/* the lower changed under us */
	else if (rmdir)
		err = shiftfs_vfs_rmdir(idmap, d_inode(lower_parent), child);
	else
		err = shiftfs_vfs_unlink(idmap, d_inode(lower_parent), child);
	shiftfs_end_dirop(lower_parent, child);
out_drop:
	shiftfs_end_change(sb, &sc);
	shiftfs_copyattr(dir);
	shiftfs_copyattr(inode);
	return err;
}

static int shiftfs_unlink(struct inode *dir, struct dentry *dentry)
{
	return shiftfs_remove(dir, dentry, false);
}

static int shiftfs_rmdir(struct inode *dir, struct dentry *dentry)
{
	return shiftfs_remove(dir, dentry, true);
}

static int shiftfs_rename(struct mnt_idmap *idmap, struct inode *olddir,
			  struct dentry *old, struct inode *newdir,
			  struct dentry *new, unsigned int flags)
{
	struct super_block *sb = olddir->i_sb;
	struct mnt_idmap *lidmap = shiftfs_lower_idmap(sb);
	struct dentry *lower_old_parent = shiftfs_lower(old->d_parent);
	struct dentry *lower_new_parent = shiftfs_lower(new->d_parent);
	bool target = d_really_is_positive(new);
	struct inode *objs[4] = {
		olddir, newdir, d_inode(old), target ? d_inode(new) : NULL,
	};
	struct shiftfs_rename rn = {};
	struct shiftfs_creds sc;
	struct dentry *lower_new;
	int err;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT))
		return -EINVAL;
	/* a new name or a whiteout is a creation: the caller needs disk ids */
	if (!target || (flags & RENAME_WHITEOUT)) {
		err = shiftfs_caller_mapped(sb);
		if (err)
			return err;
	}
	err = shiftfs_start_change(sb, objs, ARRAY_SIZE(objs), &sc);
	if (err)
		return err;

	if (target)
		lower_new = dget(shiftfs_lower(new));
	else
		lower_new = shiftfs_lookup_one(lidmap, &new->d_name,
					       lower_new_parent);
	if (IS_ERR(lower_new)) {
		err = PTR_ERR(lower_new);
		goto out_drop;
	}
	err = shiftfs_start_rename(&rn, lidmap, lower_old_parent,
				   shiftfs_lower(old), lower_new_parent,
				   lower_new, flags);
	if (err)
		goto out_put;
	if (d_is_positive(rn.rd.new_dentry) != target)
		err = -ESTALE;	/* the lower changed under us */
	else
		err = vfs_rename(&rn.rd);
	shiftfs_end_rename(&rn);
out_put:
	dput(lower_new);
out_drop:
	shiftfs_end_change(sb, &sc);
	shiftfs_copyattr(olddir);
	if (newdir != olddir)
		shiftfs_copyattr(newdir);
	shiftfs_copyattr(d_inode(old));
	if (target)
		shiftfs_copyattr(d_inode(new));
	return err;
}

static int shiftfs_dummy_open(struct inode *inode, struct file *file)
{
	return 0;
}

static int shiftfs_tmpfile(struct mnt_idmap *idmap, struct inode *dir,
			   struct file *file, umode_t mode)
{
	struct super_block *sb = dir->i_sb;
	struct dentry *dentry = file->f_path.dentry;
	struct vfsmount *mnt = SHIFTFS_SB(sb)->lower.mnt;
	struct path parent = {
		.mnt = mnt,
		.dentry = shiftfs_lower(dentry->d_parent),
	};
	struct shiftfs_creds sc;
	struct inode *inode;
	struct file *real;
	int err;

	err = shiftfs_caller_mapped(sb);
	if (err)
		return err;
	err = shiftfs_override_creds(sb, &dir, 1, &sc);
	if (err)
		return err;
	err = mnt_want_write(mnt);
	if (err)
		goto out_creds;
	real = shiftfs_backing_tmpfile(file, shiftfs_lower_idmap(sb), &parent,
				       mode, file->f_flags, current_cred());
	mnt_drop_write(mnt);
	if (IS_ERR(real)) {
		err = PTR_ERR(real);
		goto out_creds;
	}
	inode = shiftfs_iget(sb, file_inode(real));
	if (IS_ERR(inode)) {
		err = PTR_ERR(inode);
		fput(real);
		goto out_creds;
	}
	shiftfs_set_lower(dentry, dget(real->f_path.dentry));
	/* d_tmpfile() drops the link the new inode is born with */
	set_nlink(inode, 1);
	d_tmpfile(file, inode);
	file->private_data = real;
	err = finish_open(file, dentry, shiftfs_dummy_open);
	if (err) {
		file->private_data = NULL;
		fput(real);
	}
out_creds:
	shiftfs_revert_creds(&sc);
	return err;
}

const struct inode_operations shiftfs_dir_inode_ops = {
	.lookup		= shiftfs_lookup,
	.create		= shiftfs_create,
	.mkdir		= shiftfs_mkdir,
	.mknod		= shiftfs_mknod,
	.symlink	= shiftfs_symlink,
	.link		= shiftfs_link,
	.unlink		= shiftfs_unlink,
	.rmdir		= shiftfs_rmdir,
	.rename		= shiftfs_rename,
	.tmpfile	= shiftfs_tmpfile,
	.permission	= shiftfs_permission,
	.getattr	= shiftfs_getattr,
	.setattr	= shiftfs_setattr,
	.listxattr	= shiftfs_listxattr,
	.fileattr_get	= shiftfs_fileattr_get,
	.fileattr_set	= shiftfs_fileattr_set,
	SHIFTFS_ACL_INODE_OPS,
};

/* ---- directory files: everything happens on the lower directory ---- */

static int shiftfs_dir_release(struct inode *inode, struct file *file)
{
	if (file->private_data)
		fput(file->private_data);
	return 0;
}

static int shiftfs_iterate(struct file *file, struct dir_context *ctx)
{
	struct inode *inode = file_inode(file);
	struct file *real = file->private_data;
	struct shiftfs_creds sc;
	int err;

	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return err;
	/* entries and d_ino are the lower's; iterate_dir() keeps the offset */
	real->f_pos = ctx->pos;
	err = iterate_dir(real, ctx);
	shiftfs_revert_creds(&sc);
	shiftfs_copyattr(inode);
	return err;
}

static loff_t shiftfs_dir_llseek(struct file *file, loff_t offset, int whence)
{
	struct file *real = file->private_data;
	loff_t ret;

	real->f_pos = file->f_pos;
	ret = vfs_llseek(real, offset, whence);
	file->f_pos = real->f_pos;
	return ret;
}

const struct file_operations shiftfs_dir_ops = {
	.open		= shiftfs_open,
	.release	= shiftfs_dir_release,
	.read		= generic_read_dir,
	.iterate_shared	= shiftfs_iterate,
	.llseek		= shiftfs_dir_llseek,
	.fsync		= shiftfs_fsync,
	.unlocked_ioctl	= shiftfs_ioctl,
	.flock		= shiftfs_flock,
};
