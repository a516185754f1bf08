// SPDX-License-Identifier: GPL-2.0
/*
 * shiftfs: credentials for lower operations, attributes, permission.
 */
#include <linux/capability.h>
#include <linux/cred.h>
#include <linux/slab.h>
#include <linux/user_namespace.h>
#include "shiftfs.h"

/*
 * Credentials for an operation on the lower.
 *
 * The VFS has already checked the operation on the shiftfs inodes, which
 * carry the view ids, with the caller's own credentials (permission,
 * may_create/may_delete, sticky bits, setattr_prepare, ...), exactly as on
 * an idmapped mount.  The lower filesystem checks it again against the disk
 * ids, so the lower operation runs on a copy of the caller's credentials
 * with fsuid, fsgid and the supplementary groups mapped view->disk (ids
 * without a disk id are dropped from the groups and become invalid ids
 * that own nothing).
 *
 * Why no capability leaks:
 *
 * A caller whose credentials live in the initial user namespace keeps its
 * capabilities unchanged: they already are valid over every id on the
 * host, shiftfs adds nothing.
 *
 * A caller in a user namespace (a container root) holds capabilities only
 * relative to that namespace; on the lower they would be useless, since
 * disk ids are generally not mapped in it.  Its lower credentials are
 * therefore moved to the initial user namespace, and this is the one place
 * where power could leak, so they carry no capability at all except the
 * file-permission ones (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
 * CAP_FOWNER, CAP_FSETID), and each of those only if the caller holds it in
 * its own namespace AND every shiftfs inode the operation touches has its
 * view uid and gid mapped in the caller's namespace.  That is precisely
 * the condition under which the VFS honours the capability on those
 * inodes (capable_wrt_inode_uidgid()), so the lower never lets the caller
 * do anything the view did not already allow.  The lower operation only
 * reaches the lower inodes behind those shiftfs inodes (nothing else on
 * the host is reachable through the mount), and every other capability
 * (CAP_SYS_ADMIN for trusted.* xattrs, CAP_SYS_RESOURCE for reserved
 * blocks and quota, CAP_LINUX_IMMUTABLE, CAP_MKNOD, CAP_SETFCAP, ...) is
 * dropped, so a container root gains no power over files outside its
 * range and none over the host.  Files whose disk ids fall outside the map
 * have invalid view ids, which no namespace maps: no capability is ever
 * carried down for them.
 */
static const int shiftfs_file_caps[] = {
	CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
	CAP_FSETID,
};

static bool shiftfs_privileged_over(const struct cred *cred,
				    struct inode *const *objs,
				    unsigned int nr_objs)
{
	unsigned int i;

	for (i = 0; i < nr_objs; i++) {
		if (!objs[i])
			continue;
		if (!kuid_has_mapping(cred->user_ns, objs[i]->i_uid) ||
		    !kgid_has_mapping(cred->user_ns, objs[i]->i_gid))
			return false;
	}
	return true;
}

static int shiftfs_map_groups(const struct shiftfs_sb_info *sbi,
			      struct cred *new)
{
	const struct group_info *gi = new->group_info;
	struct group_info *ngi;
	int i, n = 0;

	if (!sbi->shift_gids || !gi || !gi->ngroups)
		return 0;
	ngi = groups_alloc(gi->ngroups);
	if (!ngi)
		return -ENOMEM;
	for (i = 0; i < gi->ngroups; i++) {
		kgid_t gid = shiftfs_gid_to_disk(sbi, gi->gid[i]);

		if (gid_valid(gid))
			ngi->gid[n++] = gid;
	}
	ngi->ngroups = n;
	groups_sort(ngi);
	set_groups(new, ngi);
	put_group_info(ngi);
	return 0;
}

/* Build the lower credentials for the caller; @priv: keep its file caps. */
static struct cred *shiftfs_make_creds(const struct shiftfs_sb_info *sbi,
				       bool priv)
{
	const struct cred *cur = current_cred();
	struct cred *new;
	int err, i;

	new = prepare_creds();
	if (!new)
		return ERR_PTR(-ENOMEM);
	new->fsuid = shiftfs_uid_to_disk(sbi, cur->fsuid);
	new->fsgid = shiftfs_gid_to_disk(sbi, cur->fsgid);
	err = shiftfs_map_groups(sbi, new);
	if (err) {
		abort_creds(new);
		return ERR_PTR(err);
	}

	if (cur->user_ns != &init_user_ns) {
		kernel_cap_t keep = CAP_EMPTY_SET;

		for (i = 0; i < ARRAY_SIZE(shiftfs_file_caps); i++) {
			int cap = shiftfs_file_caps[i];

			if (priv && cap_raised(cur->cap_effective, cap))
				cap_raise(keep, cap);
		}
		new->cap_effective = keep;
		new->cap_permitted = keep;
		new->cap_inheritable = CAP_EMPTY_SET;
		new->cap_ambient = CAP_EMPTY_SET;
		put_user_ns(new->user_ns);
		new->user_ns = get_user_ns(&init_user_ns);
	}

	return new;
}

void shiftfs_cred_cache_init(struct shiftfs_cred_cache *cc)
{
	spin_lock_init(&cc->lock);
}

static void shiftfs_cred_slot_put(struct shiftfs_cred_slot *slot)
{
	if (slot->caller)
		put_cred(slot->caller);
	if (slot->lower[0])
		put_cred(slot->lower[0]);
	if (slot->lower[1])
		put_cred(slot->lower[1]);
}

void shiftfs_cred_cache_free(struct shiftfs_cred_cache *cc)
{
	unsigned int i;

	for (i = 0; i < SHIFTFS_CRED_SLOTS; i++)
		shiftfs_cred_slot_put(&cc->slot[i]);
	memset(cc->slot, 0, sizeof(cc->slot));
}

static const struct cred *shiftfs_cred_lookup(struct shiftfs_cred_cache *cc,
					      const struct cred *cur, int idx)
{
	const struct cred *hit = NULL;
	unsigned int i;

	spin_lock(&cc->lock);
	for (i = 0; i < SHIFTFS_CRED_SLOTS; i++) {
		struct shiftfs_cred_slot *slot = &cc->slot[i];

		if (slot->caller == cur && slot->lower[idx]) {
			hit = get_cred(slot->lower[idx]);
			break;
		}
	}
	spin_unlock(&cc->lock);
	return hit;
}

/* Remember @new for @cur, evicting the oldest slot if none is @cur's. */
static void shiftfs_cred_insert(struct shiftfs_cred_cache *cc,
				const struct cred *cur, int idx,
				const struct cred *new)
{
	struct shiftfs_cred_slot old = {};
	struct shiftfs_cred_slot *slot = NULL;
	unsigned int i;

	spin_lock(&cc->lock);
	for (i = 0; i < SHIFTFS_CRED_SLOTS; i++) {
		if (cc->slot[i].caller == cur) {
			slot = &cc->slot[i];
			break;
		}
	}
	if (!slot) {
		slot = &cc->slot[cc->next];
		cc->next = (cc->next + 1) % SHIFTFS_CRED_SLOTS;
		old = *slot;
		memset(slot, 0, sizeof(*slot));
		slot->caller = get_cred(cur);
	}
	if (!slot->lower[idx])
		slot->lower[idx] = get_cred(new);
	spin_unlock(&cc->lock);
	shiftfs_cred_slot_put(&old);
}

/*
 * The lower credentials for an operation on @objs (the shiftfs inodes it
 * touches; NULL entries are skipped), referenced, or an ERR_PTR.
 */
const struct cred *shiftfs_get_creds(struct super_block *sb,
				     struct inode *const *objs,
				     unsigned int nr_objs)
{
	struct shiftfs_sb_info *sbi = SHIFTFS_SB(sb);
	const struct cred *cur = current_cred();
	const struct cred *hit;
	struct cred *new;
	bool priv = false;

	if (cur->user_ns != &init_user_ns)
		priv = shiftfs_privileged_over(cur, objs, nr_objs);
	hit = shiftfs_cred_lookup(&sbi->creds, cur, priv);
	if (hit)
		return hit;
	new = shiftfs_make_creds(sbi, priv);
	if (IS_ERR(new))
		return new;
	shiftfs_cred_insert(&sbi->creds, cur, priv, new);
	return new;
}

/* Switch to the lower credentials; undo with shiftfs_revert_creds(). */
int shiftfs_override_creds(struct super_block *sb, struct inode *const *objs,
			   unsigned int nr_objs, struct shiftfs_creds *sc)
{
	const struct cred *new = shiftfs_get_creds(sb, objs, nr_objs);

	if (IS_ERR(new))
		return PTR_ERR(new);
	sc->new = new;
	sc->old = override_creds(new);
	return 0;
}

void shiftfs_revert_creds(struct shiftfs_creds *sc)
{
	revert_creds(sc->old);
	put_cred(sc->new);
}

/*
 * A change on the lower: the lower credentials and write access to the
 * lower mount; undo with shiftfs_end_change().
 */
int shiftfs_start_change(struct super_block *sb, struct inode *const *objs,
			 unsigned int nr_objs, struct shiftfs_creds *sc)
{
	int err = shiftfs_override_creds(sb, objs, nr_objs, sc);

	if (err)
		return err;
	err = mnt_want_write(SHIFTFS_SB(sb)->lower.mnt);
	if (err)
		shiftfs_revert_creds(sc);
	return err;
}

void shiftfs_end_change(struct super_block *sb, struct shiftfs_creds *sc)
{
	mnt_drop_write(SHIFTFS_SB(sb)->lower.mnt);
	shiftfs_revert_creds(sc);
}

/*
 * New objects get the disk ids of the caller's fsuid and fsgid: a caller
 * without them cannot create anything (as on an idmapped mount).
 */
int shiftfs_caller_mapped(struct super_block *sb)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(sb);

	if (!uid_valid(shiftfs_uid_to_disk(sbi, current_fsuid())) ||
	    !gid_valid(shiftfs_gid_to_disk(sbi, current_fsgid())))
		return -EOVERFLOW;
	return 0;
}

#define SHIFTFS_COPY_FLAGS (S_SYNC | S_NOATIME | S_APPEND | S_IMMUTABLE | \
			    S_DIRSYNC | S_NOCMTIME)

/* The view ids of @inode from the lower ids @luid/@lgid. */
static void shiftfs_translate_ids(struct inode *inode, kuid_t luid,
				  kgid_t lgid)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(inode->i_sb);
	struct shiftfs_inode *si = SHIFTFS_I(inode);
	struct mnt_idmap *idmap = shiftfs_lower_idmap(inode->i_sb);
	struct user_namespace *fs_ns = i_user_ns(si->lower);
	kuid_t uid;
	kgid_t gid;

	uid = shiftfs_uid_to_view(sbi,
				  vfsuid_into_kuid(make_vfsuid(idmap, fs_ns, luid)));
	gid = shiftfs_gid_to_view(sbi,
				  vfsgid_into_kgid(make_vfsgid(idmap, fs_ns, lgid)));
	if (!uid_eq(inode->i_uid, uid))
		WRITE_ONCE(inode->i_uid, uid);
	if (!gid_eq(inode->i_gid, gid))
		WRITE_ONCE(inode->i_gid, gid);
	/* the view ids are in place before they are marked current */
	smp_wmb();
	WRITE_ONCE(si->lower_uid, luid);
	WRITE_ONCE(si->lower_gid, lgid);
	WRITE_ONCE(si->ids_valid, true);
}

/*
 * Refresh the ids, mode and flags of @inode from its lower inode.  Safe in
 * RCU walk; racing refreshes write the same values.
 */
static void shiftfs_copy_ids(struct inode *inode)
{
	struct shiftfs_inode *si = SHIFTFS_I(inode);
	struct inode *lower = si->lower;
	kuid_t luid = READ_ONCE(lower->i_uid);
	kgid_t lgid = READ_ONCE(lower->i_gid);

	if (!READ_ONCE(si->ids_valid) ||
	    !uid_eq(luid, READ_ONCE(si->lower_uid)) ||
	    !gid_eq(lgid, READ_ONCE(si->lower_gid)))
		shiftfs_translate_ids(inode, luid, lgid);
	else
		smp_rmb();	/* pairs with shiftfs_translate_ids() */
	if (inode->i_mode != lower->i_mode)
		inode->i_mode = lower->i_mode;
	if ((inode->i_flags ^ lower->i_flags) & SHIFTFS_COPY_FLAGS)
		inode_set_flags(inode, lower->i_flags & SHIFTFS_COPY_FLAGS,
				SHIFTFS_COPY_FLAGS);
}

void shiftfs_copyattr(struct inode *inode)
{
	struct inode *lower = shiftfs_lower_inode(inode);

	shiftfs_copy_ids(inode);
	shiftfs_copy_times(inode, lower);
	i_size_write(inode, i_size_read(lower));
	inode->i_blocks = lower->i_blocks;
	if (inode->i_nlink != lower->i_nlink)
		set_nlink(inode, lower->i_nlink);
}

/*
 * Permission is decided on the view: the shiftfs inode carries the view
 * ids, and generic_permission() checks them with the caller's own
 * credentials.  Lower-specific refusals surface when the lower operation
 * runs.
 */
int shiftfs_permission(struct mnt_idmap *idmap, struct inode *inode, int mask)
{
	shiftfs_copy_ids(inode);
	return generic_permission(&nop_mnt_idmap, inode, mask);
}

/*
 * The ids of a lower stat in the view (ids without a view id show as the
 * overflow ids): the inode's own view ids when the stat shows the lower
 * ids they were computed from, as it does unless the lower changed.
 */
static void shiftfs_stat_ids(struct inode *inode, struct kstat *stat)
{
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(inode->i_sb);
	struct shiftfs_inode *si = SHIFTFS_I(inode);
	bool same = READ_ONCE(si->ids_valid) &&
		    shiftfs_lower_idmap(inode->i_sb) == &nop_mnt_idmap &&
		    uid_eq(stat->uid, READ_ONCE(si->lower_uid)) &&
		    gid_eq(stat->gid, READ_ONCE(si->lower_gid));

	if (same) {
		smp_rmb();	/* pairs with shiftfs_translate_ids() */
		stat->uid = READ_ONCE(inode->i_uid);
		stat->gid = READ_ONCE(inode->i_gid);
		return;
	}
	stat->uid = shiftfs_uid_to_view(sbi, stat->uid);
	stat->gid = shiftfs_gid_to_view(sbi, stat->gid);
}

int shiftfs_getattr(struct mnt_idmap *idmap, const struct path *path,
		    struct kstat *stat, u32 request_mask,
		    unsigned int query_flags)
{
	struct dentry *dentry = path->dentry;
	struct inode *inode = d_inode(dentry);
	struct path lower;
	int err;

	shiftfs_lower_path(dentry, &lower);
	err = shiftfs_vfs_getattr(&lower, stat, request_mask, query_flags);
	if (err)
		return err;
	shiftfs_copyattr(inode);
	shiftfs_stat_ids(inode, stat);
	stat->dev = dentry->d_sb->s_dev;
	return 0;
}

int shiftfs_setattr(struct mnt_idmap *idmap, struct dentry *dentry,
		    struct iattr *attr)
{
	struct inode *inode = d_inode(dentry);
	const struct shiftfs_sb_info *sbi = SHIFTFS_SB(inode->i_sb);
	struct dentry *lower = shiftfs_lower(dentry);
	struct inode *linode = d_inode(lower);
	struct shiftfs_creds sc;
	struct iattr la;
	int err;

	err = setattr_prepare(&nop_mnt_idmap, dentry, attr);
	if (err)
		return err;

	la = *attr;
	if (la.ia_valid & ATTR_UID) {
		kuid_t uid = shiftfs_uid_to_disk(sbi,
						 vfsuid_into_kuid(attr->ia_vfsuid));

		if (!uid_valid(uid))
			return -EOVERFLOW;
		la.ia_vfsuid = VFSUIDT_INIT(uid);
	}
	if (la.ia_valid & ATTR_GID) {
		kgid_t gid = shiftfs_gid_to_disk(sbi,
						 vfsgid_into_kgid(attr->ia_vfsgid));

		if (!gid_valid(gid))
			return -EOVERFLOW;
		la.ia_vfsgid = VFSGIDT_INIT(gid);
	}
	/* the lower recomputes the mode for suid/sgid killing */
	if (la.ia_valid & (ATTR_KILL_SUID | ATTR_KILL_SGID))
		la.ia_valid &= ~ATTR_MODE;
	la.ia_valid &= ~ATTR_FILE;
	la.ia_file = NULL;

	err = shiftfs_start_change(inode->i_sb, &inode, 1, &sc);
	if (err)
		return err;
	if (la.ia_valid & ATTR_SIZE) {
		err = get_write_access(linode);
		if (err)
			goto out_drop;
	}
	inode_lock(linode);
	err = shiftfs_notify_change(shiftfs_lower_idmap(inode->i_sb), lower,
				    &la);
	inode_unlock(linode);
	if (la.ia_valid & ATTR_SIZE)
		put_write_access(linode);
out_drop:
	shiftfs_end_change(inode->i_sb, &sc);
	shiftfs_copyattr(inode);
	return err;
}

static const char *shiftfs_get_link(struct dentry *dentry, struct inode *inode,
				    struct delayed_call *done)
{
	if (!dentry)
		return ERR_PTR(-ECHILD);
	return vfs_get_link(shiftfs_lower(dentry), done);
}

const struct inode_operations shiftfs_file_inode_ops = {
	.permission	= shiftfs_permission,
	.getattr	= shiftfs_getattr,
	.setattr	= shiftfs_setattr,
	.listxattr	= shiftfs_listxattr,
	.fileattr_get	= shiftfs_fileattr_get,
	.fileattr_set	= shiftfs_fileattr_set,
	.fiemap		= shiftfs_fiemap,
	SHIFTFS_ACL_INODE_OPS,
};

const struct inode_operations shiftfs_symlink_inode_ops = {
	.get_link	= shiftfs_get_link,
	.permission	= shiftfs_permission,
	.getattr	= shiftfs_getattr,
	.setattr	= shiftfs_setattr,
	.listxattr	= shiftfs_listxattr,
};

const struct inode_operations shiftfs_special_inode_ops = {
	.permission	= shiftfs_permission,
	.getattr	= shiftfs_getattr,
	.setattr	= shiftfs_setattr,
	.listxattr	= shiftfs_listxattr,
	SHIFTFS_ACL_INODE_OPS,
};
