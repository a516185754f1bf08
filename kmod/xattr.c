// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs: extended attributes, POSIX ACLs and file capabilities.
 *
 * xattrs pass through to the lower inode with the lower credentials; the
 * VFS has already applied its rules (xattr_permission(), the LSM hooks,
 * trusted.* needing CAP_SYS_ADMIN, ...) to the caller on the view.  Two
 * kinds of xattr carry ids and are translated:
 *
 * - system.posix_acl_access and system.posix_acl_default: the ids of the
 *   ACL_USER and ACL_GROUP entries are disk ids on the lower and view ids
 *   on shiftfs.  A disk id outside the map reads as an invalid id (shown
 *   like on an idmapped mount); a view id without a disk id cannot be
 *   stored (EOVERFLOW).
 *
 * - security.capability: a v3 capability's rootid is a disk uid on the
 *   lower and a view uid on shiftfs.  A v2 capability (no rootid) means
 *   "rootid 0" of the filesystem, so on the lower it is disk uid 0.  The
 *   VFS converts what callers write and read relative to the shiftfs
 *   superblock (cap_convert_nscap(), cap_inode_getsecurity()), and the
 *   handler below translates between that and the lower, the same way
 *   those functions treat an idmapped mount: a v2 stored on disk reads as
 *   a v3 whose rootid is the view id of disk uid 0, and a v2 written by a
 *   privileged caller is stored as a v3 whose rootid is the disk id of
 *   view uid 0.
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/mount.h>
#include <linux/slab.h>
#include <linux/uidgid.h>
#include <linux/xattr.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include "shiftfs.h"

/* ---- POSIX ACLs ---- */

/*
 * A view copy of the lower ACL @acl of @lower (consumed): entries carry
 * view ids.  The lower's ACL is in the lower filesystem's ids; the lower
 * mount's idmapping is applied first (what the lower mount shows), then
 * the shiftfs map.
 */
static struct posix_acl *shiftfs_acl_to_view(struct super_block *sb,
					     struct inode *lower,
					     struct posix_acl *acl)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(sb);
	struct mnt_idmap *idmap = shiftfs_lower_idmap(sb);
	struct user_namespace *fs_ns = i_user_ns(lower);
	struct posix_acl *view;
	int i;

	if (IS_ERR_OR_NULL(acl))
		return acl;
	view = posix_acl_clone(acl, GFP_KERNEL);
	posix_acl_release(acl);
	if (!view)
		return ERR_PTR(-ENOMEM);
	for (i = 0; i < view->a_count; i++) {
		struct posix_acl_entry *e = &view->a_entries[i];

		switch (e->e_tag) {
		case ACL_USER:
			e->e_uid = shiftfs_uid_to_view(sbi,
				vfsuid_into_kuid(make_vfsuid(idmap, fs_ns,
							     e->e_uid)));
			break;
		case ACL_GROUP:
			e->e_gid = shiftfs_gid_to_view(sbi,
				vfsgid_into_kgid(make_vfsgid(idmap, fs_ns,
							     e->e_gid)));
			break;
		}
	}
	return view;
}

/* A disk copy of the view ACL @acl, or ERR_PTR(-EOVERFLOW). */
static struct posix_acl *shiftfs_acl_to_disk(struct super_block *sb,
					     const struct posix_acl *acl)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(sb);
	struct posix_acl *disk;
	int i;

	disk = posix_acl_clone(acl, GFP_KERNEL);
	if (!disk)
		return ERR_PTR(-ENOMEM);
	for (i = 0; i < disk->a_count; i++) {
		struct posix_acl_entry *e = &disk->a_entries[i];

		switch (e->e_tag) {
		case ACL_USER:
			e->e_uid = shiftfs_uid_to_disk(sbi, e->e_uid);
			if (!uid_valid(e->e_uid))
				goto overflow;
			break;
		case ACL_GROUP:
			e->e_gid = shiftfs_gid_to_disk(sbi, e->e_gid);
			if (!gid_valid(e->e_gid))
				goto overflow;
			break;
		}
	}
	return disk;

overflow:
	posix_acl_release(disk);
	return ERR_PTR(-EOVERFLOW);
}

/*
 * The ACL of @inode, with view ids.  Shiftfs inodes never cache ACLs
 * (ACL_DONT_CACHE), so the VFS asks here outside RCU walk every time.
 */
struct posix_acl *shiftfs_get_inode_acl(struct inode *inode, int type,
					bool rcu)
{
	struct inode *lower = shiftfs_lower_inode(inode);
	struct shiftfs_creds sc;
	struct posix_acl *acl;
	int err;

	if (rcu)
		return ERR_PTR(-ECHILD);
	if (!IS_POSIXACL(lower))
		return NULL;
	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return ERR_PTR(err);
	acl = shiftfs_lower_inode_acl(lower, type);
	shiftfs_revert_creds(&sc);
	return shiftfs_acl_to_view(inode->i_sb, lower, acl);
}

struct posix_acl *shiftfs_get_acl(struct mnt_idmap *idmap,
				  struct dentry *dentry, int type)
{
	return shiftfs_get_inode_acl(d_inode(dentry), type, false);
}

/*
 * Store @acl (view ids; NULL removes it).  The VFS has checked ownership
 * and validity on the view; the lower checks again with the lower
 * credentials and updates the mode for an access ACL.
 */
int shiftfs_set_acl(struct mnt_idmap *idmap, struct dentry *dentry,
		    struct posix_acl *acl, int type)
{
	struct inode *inode = d_inode(dentry);
	struct super_block *sb = inode->i_sb;
	struct posix_acl *disk = NULL;
	struct shiftfs_creds sc;
	int err;

	if (acl) {
		disk = shiftfs_acl_to_disk(sb, acl);
		if (IS_ERR(disk))
			return PTR_ERR(disk);
	}
	err = shiftfs_start_change(sb, &inode, 1, &sc);
	if (err)
		goto out_release;
	err = shiftfs_lower_set_acl(shiftfs_lower_idmap(sb),
				    shiftfs_lower(dentry), type, disk);
	shiftfs_end_change(sb, &sc);
out_release:
	posix_acl_release(disk);
	shiftfs_copyattr(inode);
	return err;
}

/*
 * system.posix_acl_* as xattrs: the path the VFS takes before 6.2 (and
 * __vfs_getxattr() callers on any kernel).  The value holds ids as the
 * initial user namespace numbers them: shiftfs mounts are never
 * idmapped, so those are the view ids.
 */
static int shiftfs_acl_xattr_get(const struct xattr_handler *handler,
				 struct dentry *dentry, struct inode *inode,
				 const char *name, void *buffer, size_t size)
{
	struct posix_acl *acl;
	int err;

	if (!IS_POSIXACL(inode))
		return -EOPNOTSUPP;
	if (S_ISLNK(inode->i_mode))
		return -EOPNOTSUPP;
	acl = shiftfs_get_inode_acl(inode, handler->flags, false);
	if (IS_ERR(acl))
		return PTR_ERR(acl);
	if (!acl)
		return -ENODATA;
	err = shiftfs_acl_to_xattr(acl, buffer, size);
	posix_acl_release(acl);
	return err;
}

static int shiftfs_acl_xattr_set(const struct xattr_handler *handler,
				 struct mnt_idmap *idmap,
				 struct dentry *dentry, struct inode *inode,
				 const char *name, const void *value,
				 size_t size, int flags)
{
	struct posix_acl *acl = NULL;
	int err;

	if (!IS_POSIXACL(inode) || !dentry)
		return -EOPNOTSUPP;
	if (handler->flags == ACL_TYPE_DEFAULT && !S_ISDIR(inode->i_mode))
		return value ? -EACCES : 0;
	if (!inode_owner_or_capable(&nop_mnt_idmap, inode))
		return -EPERM;
	if (value) {
		acl = posix_acl_from_xattr(&init_user_ns, value, size);
		if (IS_ERR(acl))
			return PTR_ERR(acl);
	}
	if (acl) {
		err = posix_acl_valid(inode->i_sb->s_user_ns, acl);
		if (err)
			goto out;
	}
	err = shiftfs_set_acl(idmap, dentry, acl, handler->flags);
out:
	posix_acl_release(acl);
	return err;
}

static const struct xattr_handler shiftfs_acl_access_handler = {
	.name	= XATTR_NAME_POSIX_ACL_ACCESS,
	.flags	= ACL_TYPE_ACCESS,
	.get	= shiftfs_acl_xattr_get,
	.set	= shiftfs_acl_xattr_set,
};

static const struct xattr_handler shiftfs_acl_default_handler = {
	.name	= XATTR_NAME_POSIX_ACL_DEFAULT,
	.flags	= ACL_TYPE_DEFAULT,
	.get	= shiftfs_acl_xattr_get,
	.set	= shiftfs_acl_xattr_set,
};

/* ---- security.capability ---- */

/*
 * Translate the lower capability @cap of @size bytes to the view, in
 * place; the new size, or @size for anything that is no v2/v3 capability
 * (passed unchanged: the VFS rejects it as it would on the lower).
 */
static int shiftfs_fscap_to_view(struct super_block *sb, struct inode *lower,
				 struct vfs_ns_cap_data *cap, int size)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(sb);
	struct user_namespace *fs_ns = i_user_ns(lower);
	u32 magic = le32_to_cpu(cap->magic_etc);
	u32 rev = magic & VFS_CAP_REVISION_MASK;
	kuid_t root;
	u32 rootid;

	if (size == XATTR_CAPS_SZ_2 && rev == VFS_CAP_REVISION_2)
		rootid = 0;
	else if (size == XATTR_CAPS_SZ_3 && rev == VFS_CAP_REVISION_3)
		rootid = le32_to_cpu(cap->rootid);
	else
		return size;

	root = make_kuid(fs_ns, rootid);
	root = vfsuid_into_kuid(make_vfsuid(shiftfs_lower_idmap(sb), fs_ns,
					    root));
	root = shiftfs_uid_to_view(sbi, root);
	if (rev == VFS_CAP_REVISION_2 && uid_eq(root, GLOBAL_ROOT_UID))
		return size;
	/* an unmapped rootid reads as EOVERFLOW, see cap_inode_getsecurity() */
	cap->magic_etc = cpu_to_le32(VFS_CAP_REVISION_3 |
				     (magic & VFS_CAP_FLAGS_EFFECTIVE));
	cap->rootid = cpu_to_le32(from_kuid(&init_user_ns, root));
	return XATTR_CAPS_SZ_3;
}

/* Translate the view capability @cap to the lower, in place. */
static int shiftfs_fscap_to_disk(struct super_block *sb, struct inode *lower,
				 struct vfs_ns_cap_data *cap, int size)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(sb);
	struct user_namespace *fs_ns = i_user_ns(lower);
	u32 magic = le32_to_cpu(cap->magic_etc);
	u32 rev = magic & VFS_CAP_REVISION_MASK;
	kuid_t root;
	uid_t rootid;

	if (size == XATTR_CAPS_SZ_2 && rev == VFS_CAP_REVISION_2) {
		/* without a uid shift, root is root on both sides */
		if (!sbi->shift_uids &&
		    shiftfs_lower_idmap(sb) == &nop_mnt_idmap)
			return size;
		root = GLOBAL_ROOT_UID;
	} else if (size == XATTR_CAPS_SZ_3 && rev == VFS_CAP_REVISION_3) {
		root = make_kuid(&init_user_ns, le32_to_cpu(cap->rootid));
	} else {
		return -EINVAL;
	}

	root = shiftfs_uid_to_disk(sbi, root);
	if (!uid_valid(root))
		return rev == VFS_CAP_REVISION_2 ? -EINVAL : -EOVERFLOW;
	root = from_vfsuid(shiftfs_lower_idmap(sb), fs_ns, VFSUIDT_INIT(root));
	rootid = from_kuid(fs_ns, root);
	if (rootid == (uid_t)-1)
		return -EOVERFLOW;
	cap->magic_etc = cpu_to_le32(VFS_CAP_REVISION_3 |
				     (magic & VFS_CAP_FLAGS_EFFECTIVE));
	cap->rootid = cpu_to_le32(rootid);
	return XATTR_CAPS_SZ_3;
}

static int shiftfs_fscap_get(const struct xattr_handler *handler,
			     struct dentry *dentry, struct inode *inode,
			     const char *name, void *buffer, size_t size)
{
	struct dentry *lower;
	struct vfs_ns_cap_data cap;
	struct shiftfs_creds sc;
	int ret;

	if (!dentry)
		return -EOPNOTSUPP;
	lower = shiftfs_lower(dentry);
	ret = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (ret)
		return ret;
	/* the raw value: the lower's own conversion is for its callers */
	ret = __vfs_getxattr(lower, d_inode(lower), XATTR_NAME_CAPS, &cap,
			     sizeof(cap));
	if (ret == -ERANGE)	/* no capability we know: pass it as it is */
		ret = __vfs_getxattr(lower, d_inode(lower), XATTR_NAME_CAPS,
				     buffer, size);
	shiftfs_revert_creds(&sc);
	if (ret < 0 || ret > sizeof(cap))
		return ret;
	ret = shiftfs_fscap_to_view(inode->i_sb, d_inode(lower), &cap, ret);
	if (!size)
		return ret;
	if (size < ret)
		return -ERANGE;
	memcpy(buffer, &cap, ret);
	return ret;
}

/*
 * The VFS has checked the caller (CAP_SETFCAP over the view owner) and
 * converted the value with cap_convert_nscap(); the lower write skips
 * the lower's checks, which would judge the lower credentials and redo
 * the conversion for them.
 */
static int shiftfs_fscap_set(const struct xattr_handler *handler,
			     struct mnt_idmap *idmap, struct dentry *dentry,
			     struct inode *inode, const char *name,
			     const void *value, size_t size, int flags)
{
	struct super_block *sb = inode->i_sb;
	struct mnt_idmap *lidmap = shiftfs_lower_idmap(sb);
	struct vfs_ns_cap_data cap;
	struct shiftfs_creds sc;
	struct dentry *lower;
	struct inode *linode;
	int err, len = 0;

	if (!dentry)
		return -EOPNOTSUPP;
	lower = shiftfs_lower(dentry);
	linode = d_inode(lower);
	if (value) {
		if (size > sizeof(cap))
			return -EINVAL;
		memcpy(&cap, value, size);
		len = shiftfs_fscap_to_disk(sb, linode, &cap, size);
		if (len < 0)
			return len;
	}
	err = shiftfs_start_change(sb, &inode, 1, &sc);
	if (err)
		return err;
	inode_lock(linode);
	if (value)
		err = __vfs_setxattr(lidmap, lower, linode, XATTR_NAME_CAPS,
				     &cap, len, flags);
	else
		err = __vfs_removexattr(lidmap, lower, XATTR_NAME_CAPS);
	inode_unlock(linode);
	shiftfs_end_change(sb, &sc);
	shiftfs_copyattr(inode);
	return err;
}

static const struct xattr_handler shiftfs_fscap_handler = {
	.name	= XATTR_NAME_CAPS,
	.get	= shiftfs_fscap_get,
	.set	= shiftfs_fscap_set,
};

/* ---- every other xattr ---- */

static int shiftfs_other_get(const struct xattr_handler *handler,
			     struct dentry *dentry, struct inode *inode,
			     const char *name, void *buffer, size_t size)
{
	struct shiftfs_creds sc;
	int ret;

	if (!dentry)
		return -EOPNOTSUPP;
	ret = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (ret)
		return ret;
	ret = vfs_getxattr(shiftfs_lower_idmap(inode->i_sb),
			   shiftfs_lower(dentry), name, buffer, size);
	shiftfs_revert_creds(&sc);
	return ret;
}

static int shiftfs_other_set(const struct xattr_handler *handler,
			     struct mnt_idmap *idmap, struct dentry *dentry,
			     struct inode *inode, const char *name,
			     const void *value, size_t size, int flags)
{
	struct super_block *sb = inode->i_sb;
	struct shiftfs_creds sc;
	int err;

	if (!dentry)
		return -EOPNOTSUPP;
	err = shiftfs_start_change(sb, &inode, 1, &sc);
	if (err)
		return err;
	if (value)
		err = vfs_setxattr(shiftfs_lower_idmap(sb), shiftfs_lower(dentry),
				   name, value, size, flags);
	else
		err = vfs_removexattr(shiftfs_lower_idmap(sb),
				      shiftfs_lower(dentry), name);
	shiftfs_end_change(sb, &sc);
	shiftfs_copyattr(inode);
	return err;
}

static const struct xattr_handler shiftfs_other_handler = {
	.prefix	= "",	/* every name not claimed above */
	.get	= shiftfs_other_get,
	.set	= shiftfs_other_set,
};

const struct xattr_handler *shiftfs_xattr_handlers[] = {
	&shiftfs_acl_access_handler,
	&shiftfs_acl_default_handler,
	&shiftfs_fscap_handler,
	&shiftfs_other_handler,
	NULL,
};

ssize_t shiftfs_listxattr(struct dentry *dentry, char *list, size_t size)
{
	struct inode *inode = d_inode(dentry);
	struct shiftfs_creds sc;
	ssize_t ret;

	ret = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (ret)
		return ret;
	ret = vfs_listxattr(shiftfs_lower(dentry), list, size);
	shiftfs_revert_creds(&sc);
	return ret;
}

/* ---- fileattr (FS_IOC_[GS]ETFLAGS, FS_IOC_FS[GS]ETXATTR) and fiemap ---- */

int shiftfs_fileattr_get(struct dentry *dentry, struct shiftfs_fileattr *fa)
{
	struct inode *inode = d_inode(dentry);
	struct shiftfs_creds sc;
	int err;

	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return err;
	err = vfs_fileattr_get(shiftfs_lower(dentry), fa);
	shiftfs_revert_creds(&sc);
	return err;
}

int shiftfs_fileattr_set(struct mnt_idmap *idmap, struct dentry *dentry,
			 struct shiftfs_fileattr *fa)
{
	struct inode *inode = d_inode(dentry);
	struct super_block *sb = inode->i_sb;
	struct shiftfs_creds sc;
	int err;

	err = shiftfs_start_change(sb, &inode, 1, &sc);
	if (err)
		return err;
	err = vfs_fileattr_set(shiftfs_lower_idmap(sb), shiftfs_lower(dentry),
			       fa);
	shiftfs_end_change(sb, &sc);
	shiftfs_copyattr(inode);
	return err;
}

int shiftfs_fiemap(struct inode *inode, struct fiemap_extent_info *fieinfo,
		   u64 start, u64 len)
{
	struct inode *lower = shiftfs_lower_inode(inode);
	struct shiftfs_creds sc;
	int err;

	if (!lower->i_op->fiemap)
		return -EOPNOTSUPP;
	err = shiftfs_override_creds(inode->i_sb, &inode, 1, &sc);
	if (err)
		return err;
	err = lower->i_op->fiemap(lower, fieinfo, start, len);
	shiftfs_revert_creds(&sc);
	return err;
}
