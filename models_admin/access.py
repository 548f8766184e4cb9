"""Who may use which model: a model with no groups is open to everyone; one with groups only to
their members (and to staff, who manage models). A model someone may not use does not exist for
them: it is left out of every list they see, and asking for it is answered as for a name that
names no model."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db import transaction
from django.db.models import Q, QuerySet

from models_admin.models import LocalModel


def models_usable_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[LocalModel]:
    """The ready models `user` may use, by name."""
    ready = LocalModel.objects.filter(state=LocalModel.State.READY)
    if getattr(user, "is_staff", False):
        return ready
    # A subquery rather than a join, so a member of two of a model's groups gets it once.
    open_or_member = Q(groups__isnull=True) | Q(groups__user=user.pk)
    return ready.filter(pk__in=LocalModel.objects.filter(open_or_member).values("pk"))


@transaction.atomic
def localmodel_set_groups(*, model: LocalModel, group_ids: Iterable[int]) -> list[Group]:
    """Open `model` to the given groups only; none opens it to everyone again."""
    groups = list(Group.objects.filter(pk__in=list(group_ids)).order_by("name"))
    model.groups.set(groups)
    return groups


class GroupRefused(Exception):
    """A group that cannot be saved; the message says why and what to do."""


@transaction.atomic
def group_save(*, name: str, member_ids: Iterable[int], group: Group | None = None) -> Group:
    """Create a group (or, given `group`, set its members) with these users in it."""
    if group is None:
        name = name.strip()
        if not name or len(name) > 150:
            raise GroupRefused("A group needs a name of 1 to 150 characters.")
        if Group.objects.filter(name=name).exists():
            raise GroupRefused(f"There is already a group named {name!r}; pick another name.")
        group = Group.objects.create(name=name)
    group.user_set.set(get_user_model().objects.filter(pk__in=list(member_ids)))
    return group
