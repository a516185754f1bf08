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
	/*
	 * Direct and non-blocking I/O are what the lower file offers: with
	 * FMODE_NOWAIT io_uring tries reads and writes inline first instead
	 * of handing every one to its worker threads.
	 */
	if (!IS_ERR(real))
		file->f_mode |= real->f_mode & (FMODE_CAN_ODIRECT |
						FMODE_NOWAIT);
	return real;
}

/* files and directories alike: open the lower object too */
int shiftfs_open(struct inode *inode, struct file *file)
{
	struct path path;
	struct file *real;

	/* file_dentry(): an overlayfs on top may open us with its own path */
	shiftfs_lower_path(file_dentry(file), &path);
	real = shiftfs_open_lower(file, &path, file->f_flags);
	if (IS_ERR(real))
		return PTR_ERR(real);
	file->private_data = real;
	return 0;
}

/*
 * Locks live on the lower inode (see shiftfs_lock()): OFD locks owned by
 * this file go with it, the lower file's own release drops its flocks.
 */
static int shiftfs_release(struct inode *inode, struct file *file)
{
	struct file *real = file->private_data;

	if (real) {
		locks_remove_posix(real, file);
		fput(real);
	}
	return 0;
}

#define SHIFTFS_SETFL_MASK (O_APPEND | O_NONBLOCK | O_NDELAY | O_DIRECT)

/*
 * The lower file, with the flags fcntl(F_SETFL) may have changed on the
 * shiftfs file carried over (the lower decides O_DIRECT and O_APPEND on
 * its own file).
 */
static struct file *shiftfs_real(struct file *file)
{
	struct file *real = file->private_data;
	unsigned int flags = file->f_flags & SHIFTFS_SETFL_MASK;

	if (likely((real->f_flags & SHIFTFS_SETFL_MASK) == flags))
		return real;
	if ((flags & O_DIRECT) && !(real->f_mode & FMODE_CAN_ODIRECT))
		return ERR_PTR(-EINVAL);
	if (real->f_op->check_flags) {
		int err = real->f_op->check_flags(flags);

		if (err)
			return ERR_PTR(err);
	}
	spin_lock(&real->f_lock);
	real->f_flags = (real->f_flags & ~SHIFTFS_SETFL_MASK) | flags;
	real->f_iocb_flags = iocb_flags(real);
	spin_unlock(&real->f_lock);
	return real;
}

void shiftfs_file_accessed(struct file *user_file)
{
	shiftfs_copyattr(file_inode(user_file));
}

void shiftfs_file_end_write(struct file *user_file)
{
	shiftfs_copyattr(file_inode(user_file));
}

/*
 * Reads, writes and mmap run with the lower credentials of the open (the
 * lower file's f_cred), as permission to them was decided at open time.
 */
static const struct cred *shiftfs_file_creds(struct file *file)
{
	struct file *real = file->private_data;

	return real->f_cred;
}

/*
 * Reads and writes go to the lower file with the caller's kiocb flags.
 * From 6.12 the backing-file helpers also pass asynchronous kiocbs on
 * (aio, io_uring); on older kernels an asynchronous kiocb is completed
 * synchronously, which the callers accept (the result is returned, not
 * -EIOCBQUEUED).
 */
static ssize_t shiftfs_read_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *real = shiftfs_real(iocb->ki_filp);

	if (IS_ERR(real))
		return PTR_ERR(real);
	if (!iov_iter_count(iter))
		return 0;
	return shiftfs_lower_read_iter(real, iocb, iter,
				       shiftfs_file_creds(iocb->ki_filp));
}

static ssize_t shiftfs_write_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *file = iocb->ki_filp;
	struct inode *inode = file_inode(file);
	struct file *real = shiftfs_real(file);
	ssize_t ret;

	if (IS_ERR(real))
		return PTR_ERR(real);
	if (!iov_iter_count(iter))
		return 0;
	/* suid/sgid are stripped on the view, under the inode lock */
	if (iocb->ki_flags & IOCB_NOWAIT) {
		if (!inode_trylock(inode))
			return -EAGAIN;
	} else {
		inode_lock(inode);
	}
	shiftfs_copyattr(inode);
	ret = shiftfs_lower_write_iter(real, iocb, iter,
				       shiftfs_file_creds(file));
	inode_unlock(inode);
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

/* files and directories alike: fsync the real lower file */
int shiftfs_fsync(struct file *file, loff_t start, loff_t end, int datasync)
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
	return shiftfs_lower_mmap(file, file->private_data, vma,
				  shiftfs_file_creds(file));
}

static long shiftfs_fallocate(struct file *file, int mode, loff_t offset,
			      loff_t len)
{
	struct inode *inode = file_inode(file);
	struct file *real = file->private_data;
	struct shiftfs_creds sc;
	long ret;

	inode_lock(inode);
	/* suid/sgid go by the view rules, as on a write */
	ret = file_remove_privs(file);
	if (ret)
		goto out_unlock;
	ret = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (ret)
		goto out_unlock;
	ret = vfs_fallocate(real, mode, offset, len);
	shiftfs_revert_creds(&sc);
out_unlock:
	shiftfs_copyattr(inode);
	inode_unlock(inode);
	return ret;
}

static int shiftfs_fadvise(struct file *file, loff_t offset, loff_t len,
			   int advice)
{
	struct inode *inode = file_inode(file);
	struct shiftfs_creds sc;
	int err;

	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return err;
	err = vfs_fadvise(file->private_data, offset, len, advice);
	shiftfs_revert_creds(&sc);
	return err;
}

enum shiftfs_copy_op { SHIFTFS_COPY, SHIFTFS_CLONE, SHIFTFS_DEDUPE };

/*
 * copy_file_range, clone and dedupe between two shiftfs files: done by the
 * lower on the lower files (which may share extents, as the lower allows).
 */
static loff_t shiftfs_copyfile(struct file *file_in, loff_t pos_in,
			       struct file *file_out, loff_t pos_out,
			       loff_t len, unsigned int flags,
			       enum shiftfs_copy_op op)
{
	struct inode *inode_out = file_inode(file_out);
	struct inode *objs[2] = { file_inode(file_in), inode_out };
	struct file *real_in = file_in->private_data;
	struct file *real_out = file_out->private_data;
	struct shiftfs_creds sc;
	loff_t ret;

	inode_lock(inode_out);
	if (op != SHIFTFS_DEDUPE) {
		ret = file_remove_privs(file_out);
		if (ret)
			goto out_unlock;
	}
	ret = shiftfs_override_creds(inode_out->i_sb, objs, ARRAY_SIZE(objs),
				     &sc);
	if (ret)
		goto out_unlock;
	switch (op) {
	case SHIFTFS_COPY:
		ret = vfs_copy_file_range(real_in, pos_in, real_out, pos_out,
					  len, flags);
		break;
	case SHIFTFS_CLONE:
		ret = vfs_clone_file_range(real_in, pos_in, real_out, pos_out,
					   len, flags);
		break;
	case SHIFTFS_DEDUPE:
		ret = vfs_dedupe_file_range_one(real_in, pos_in, real_out,
						pos_out, len, flags);
		break;
	}
	shiftfs_revert_creds(&sc);
out_unlock:
	shiftfs_copyattr(inode_out);
	inode_unlock(inode_out);
	return ret;
}

static ssize_t shiftfs_copy_file_range(struct file *file_in, loff_t pos_in,
				       struct file *file_out, loff_t pos_out,
				       size_t len, unsigned int flags)
{
	return shiftfs_copyfile(file_in, pos_in, file_out, pos_out, len, flags,
				SHIFTFS_COPY);
}

static loff_t shiftfs_remap_file_range(struct file *file_in, loff_t pos_in,
				       struct file *file_out, loff_t pos_out,
				       loff_t len, unsigned int remap_flags)
{
	if (remap_flags & ~(REMAP_FILE_DEDUP | REMAP_FILE_ADVISORY))
		return -EINVAL;
	return shiftfs_copyfile(file_in, pos_in, file_out, pos_out, len,
				remap_flags, (remap_flags & REMAP_FILE_DEDUP) ?
				SHIFTFS_DEDUPE : SHIFTFS_CLONE);
}

/*
 * POSIX and OFD locks are taken on the lower inode, through the lower
 * file, so that they conflict with processes using the lower directly;
 * the owner and pid stay the caller's.  The request is made through the
 * lower file and handed back pointing at the shiftfs file (a blocked
 * F_SETLKW comes back here).  Closing any file of the process drops its
 * POSIX locks (->flush below), releasing the shiftfs file drops its OFD
 * locks (shiftfs_release()).
 */
static int shiftfs_lock(struct file *file, int cmd, struct file_lock *fl)
{
	struct file *real = file->private_data;
	struct file *old = shiftfs_lock_set_file(fl, real);
	int err;

	if (IS_GETLK(cmd))
		err = vfs_test_lock(real, fl);
	else
		err = vfs_lock_file(real, cmd, fl, NULL);
	shiftfs_lock_set_file(fl, old);
	return err;
}

/*
 * flock locks belong to an open file: the lower file stands for the
 * shiftfs file (one lower file per shiftfs open), and is released with it.
 */
int shiftfs_flock(struct file *file, int cmd, struct file_lock *fl)
{
	struct file *real = file->private_data;

	shiftfs_flock_retarget(fl, real);
	return locks_lock_file_wait(real, fl);
}

static int shiftfs_flush(struct file *file, fl_owner_t id)
{
	struct inode *inode = file_inode(file);
	struct file *real = file->private_data;
	struct shiftfs_creds sc;
	int err = 0;

	if (real->f_op->flush) {
		err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
		if (err)
			return err;
		err = real->f_op->flush(real, id);
		shiftfs_revert_creds(&sc);
	}
	locks_remove_posix(real, id);
	return err;
}

/*
 * ioctls: the VFS handles the fileattr ones (FS_IOC_[GS]ETFLAGS,
 * FS_IOC_FS[GS]ETXATTR) and FIEMAP through the inode operations; of the
 * filesystem-specific ones only FS_IOC_GETVERSION goes to the lower.
 */
long shiftfs_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct inode *inode = file_inode(file);
	struct file *real = file->private_data;
	struct shiftfs_creds sc;
	long ret;

	if (cmd != FS_IOC_GETVERSION)
		return -ENOTTY;
	if (!real->f_op->unlocked_ioctl)
		return -ENOTTY;
	ret = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (ret)
		return ret;
	ret = real->f_op->unlocked_ioctl(real, cmd, arg);
	shiftfs_revert_creds(&sc);
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
	.fallocate	= shiftfs_fallocate,
	.fadvise	= shiftfs_fadvise,
	.copy_file_range = shiftfs_copy_file_range,
	.remap_file_range = shiftfs_remap_file_range,
	.lock		= shiftfs_lock,
	.flock		= shiftfs_flock,
	.flush		= shiftfs_flush,
	.setlease	= generic_setlease,
	.unlocked_ioctl	= shiftfs_ioctl,
};
