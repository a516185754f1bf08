// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs: regular file operations.  Each open shiftfs file holds an open
 * lower file (a backing file where the kernel has them) and every
 * operation is passed to it with the lower credentials.
 */
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/uio.h>
#include <linux/splice.h>
#include "shiftfs.h"

#define SHIFTFS_LOWER_OPEN_FLAGS (O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)

/*
 * Open the lower file for @file.  The VFS checked the open on the view;
 * creation and O_TRUNC already went through the shiftfs inode operations.
 */
struct file *shiftfs_open_lower(struct file *file, const struct path *path,
				int flags)
{
	struct inode *inode = file_inode(file);
	struct shiftfs_creds sc;
	struct file *real;
	int err;

	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return ERR_PTR(err);
	real = shiftfs_backing_open(file, flags & ~SHIFTFS_LOWER_OPEN_FLAGS,
				    path, current_cred());
	shiftfs_revert_creds(&sc);
	if (!IS_ERR(real) && (real->f_mode & FMODE_CAN_ODIRECT))
		file->f_mode |= FMODE_CAN_ODIRECT;
	return real;
}

static int shiftfs_open(struct inode *inode, struct file *file)
{
	struct path path;
	struct file *real;

	shiftfs_lower_path(file->f_path.dentry, &path);
	real = shiftfs_open_lower(file, &path, file->f_flags);
	if (IS_ERR(real))
		return PTR_ERR(real);
	file->private_data = real;
	return 0;
}

static int shiftfs_release(struct inode *inode, struct file *file)
{
	if (file->private_data)
		fput(file->private_data);
	return 0;
}

void shiftfs_file_accessed(struct file *user_file)
{
	shiftfs_copyattr(file_inode(user_file));
}

void shiftfs_file_end_write(struct file *user_file)
{
	shiftfs_copyattr(file_inode(user_file));
}

static struct cred *shiftfs_file_creds(struct file *file)
{
	struct inode *inode = file_inode(file);

	return shiftfs_make_creds(inode->i_sb, &inode, 1);
}

static ssize_t shiftfs_read_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *real = iocb->ki_filp->private_data;
	struct cred *cred;
	ssize_t ret;

	if (!iov_iter_count(iter))
		return 0;
	cred = shiftfs_file_creds(iocb->ki_filp);
	if (IS_ERR(cred))
		return PTR_ERR(cred);
	ret = shiftfs_lower_read_iter(real, iocb, iter, cred);
	put_cred(cred);
	return ret;
}

static ssize_t shiftfs_write_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *file = iocb->ki_filp;
	struct inode *inode = file_inode(file);
	struct file *real = file->private_data;
	struct cred *cred;
	ssize_t ret;

	if (!iov_iter_count(iter))
		return 0;
	cred = shiftfs_file_creds(file);
	if (IS_ERR(cred))
		return PTR_ERR(cred);
	/* suid/sgid are stripped on the view, under the inode lock */
	inode_lock(inode);
	shiftfs_copyattr(inode);
	ret = shiftfs_lower_write_iter(real, iocb, iter, cred);
	inode_unlock(inode);
	put_cred(cred);
	return ret;
}

static loff_t shiftfs_llseek(struct file *file, loff_t offset, int whence)
{
	struct inode *inode = file_inode(file);
	struct file *real = file->private_data;
	loff_t ret;

	inode_lock(inode);
	real->f_pos = file->f_pos;
	ret = vfs_llseek(real, offset, whence);
	file->f_pos = real->f_pos;
	inode_unlock(inode);
	return ret;
}

static int shiftfs_fsync(struct file *file, loff_t start, loff_t end,
			 int datasync)
{
	struct inode *inode = file_inode(file);
	struct shiftfs_creds sc;
	int err;

	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return err;
	err = vfs_fsync_range(file->private_data, start, end, datasync);
	shiftfs_revert_creds(&sc);
	return err;
}

/* the mapping is the lower file's: the vma is moved over to it */
static int shiftfs_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct cred *cred;
	int ret;

	cred = shiftfs_file_creds(file);
	if (IS_ERR(cred))
		return PTR_ERR(cred);
	ret = shiftfs_lower_mmap(file, file->private_data, vma, cred);
	put_cred(cred);
	return ret;
}

const struct file_operations shiftfs_file_ops = {
	.open		= shiftfs_open,
	.release	= shiftfs_release,
	.llseek		= shiftfs_llseek,
	.read_iter	= shiftfs_read_iter,
	.write_iter	= shiftfs_write_iter,
	.fsync		= shiftfs_fsync,
	.mmap		= shiftfs_mmap,
	.splice_read	= shiftfs_splice_read,
	.splice_write	= iter_file_splice_write,
};
