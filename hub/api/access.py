"""Access administration: users, groups, roles and access policies (all `auth:manage`).

Groups, roles and access policies are hub-wide. Users are managed by full admins, and by site
admins (auth:manage limited to sites) where every grant of the user lies within the admin's
sites; other users answer 404 to a site admin, and it never grants beyond its sites.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import msgspec
from hark_fleet.hub.api.base import BaseHandler
from hark_fleet.hub.api.hub_wide import HubWide
from hark_fleet.hub.api.listing import ExportHandler, FacetsHandler, ListHandler
from hark_fleet.hub.auth.principal import Sites
from hark_fleet.hub.services import access_policies, groups, roles, users
from hark_fleet.hub.services.listing import ListRequest, facet_counts, fetch_page, parse_list_request

MANAGE = "auth:manage"
# Lengths as the OpenAPI document's maxLength says: longer is a 400, never silently cut.
Description = Annotated[str, msgspec.Meta(max_length=500)]
DisplayName = Annotated[str, msgspec.Meta(max_length=200)]


class UserCreateBody(msgspec.Struct, forbid_unknown_fields=True):
    username: str
    password: str
    roles: list[str] = []
    sites: list[str] | None = None
    groups: list[str] = []
    display_name: DisplayName | None = None


class AccessBody(msgspec.Struct, forbid_unknown_fields=True):
    roles: list[str] | msgspec.UnsetType = msgspec.UNSET
    sites: list[str] | None | msgspec.UnsetType = msgspec.UNSET
    groups: list[str] | msgspec.UnsetType = msgspec.UNSET


class PasswordResetBody(msgspec.Struct, forbid_unknown_fields=True):
    password: str


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    status: str


class GroupBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    roles: list[str] = []
    sites: list[str] | None = None
    description: Description = ""


class GroupPatchBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    roles: list[str] | msgspec.UnsetType = msgspec.UNSET
    sites: list[str] | None | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class RoleBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    permissions: list[str]
    description: Description = ""


class RolePatchBody(msgspec.Struct, forbid_unknown_fields=True):
    permissions: list[str] | None = None
    description: Description | None = None


class UserAdmin(BaseHandler):
    """A users route: a full admin reaches every user, a site admin only its sites' users."""

    @property
    def admin_of(self) -> Sites:
        """The sites where the caller holds auth:manage (None: every site)."""
        return self.scope.sites

    async def within(self, request: ListRequest) -> ListRequest:
        """`request` narrowed to the users the caller manages."""
        admin_of = self.admin_of
        if admin_of is None:
            return request
        managed = await self.hub.db.run(users.manageable_user_ids, admin_of)
        if request.ids is not None:
            chosen = set(request.ids)
            managed = [i for i in managed if i in chosen]
        return dataclasses.replace(request, ids=tuple(managed))


class UsersHandler(UserAdmin, ListHandler):
    """`GET|POST /api/v1/auth/users`."""

    spec = users.USER_LIST
    permissions = {"get": MANAGE, "post": MANAGE}

    async def get(self) -> None:
        request = await self.within(parse_list_request(self.spec, self.query_args()))
        items, next_cursor = await self.hub.db.run(fetch_page, self.spec, request, self.scope)
        self.write_page(items, next_cursor)

    async def post(self) -> None:
        body = self.parse_body(UserCreateBody)
        assert self.principal is not None
        user = await self.hub.db.run(
            users.create_user,
            self.actor,
            self.principal,
            body.username,
            body.password,
            body.roles,
            body.sites,
            body.groups,
            body.display_name,
            self.admin_of,
        )
        self.write_data(user, 201)


class UserFacetsHandler(UserAdmin, FacetsHandler):
    spec = users.USER_LIST
    permissions = {"get": MANAGE}

    async def get(self) -> None:
        args = self.query_args()
        names = [n for raw in args.get("fields", []) for n in raw.split(",") if n]
        request = await self.within(parse_list_request(self.spec, args))
        self.write_data(await self.hub.db.run(facet_counts, self.spec, request, self.scope, names))


class UserExportHandler(UserAdmin, ExportHandler):
    spec = users.USER_LIST
    permissions = {"get": MANAGE, "post": MANAGE}

    async def _export(self, args: dict[str, list[str]], ids: list[str] | None) -> Any:
        if self.admin_of is not None:
            managed = await self.hub.db.run(users.manageable_user_ids, self.admin_of)
            ids = managed if ids is None else [i for i in ids if i in set(managed)]
        await super()._export(args, ids)


class UserHandler(UserAdmin):
    """`GET|DELETE /api/v1/auth/users/{id}`: detail with action states, or delete."""

    permissions = {"get": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        assert self.principal is not None
        self.write_data(await self.hub.db.run(users.user_detail, id, self.principal, self.admin_of))

    async def delete(self, id: str) -> None:
        assert self.principal is not None
        await self.hub.db.run(users.delete_user, self.actor, self.principal, id, self.admin_of)
        self.hub.authenticator.forget_all()
        self.write_no_content()


class UserAccessHandler(UserAdmin):
    """`PATCH /api/v1/auth/users/{id}/access`: roles, sites and groups, each replaced when given."""

    permissions = {"patch": MANAGE}

    async def patch(self, id: str) -> None:
        body = self.parse_changes(AccessBody)
        assert self.principal is not None
        user = await self.hub.db.run(
            users.update_access,
            self.actor,
            self.principal,
            id,
            body.get("roles"),
            body.get("sites"),
            body.get("groups"),
            "sites" in body,
            self.admin_of,
        )
        self.hub.authenticator.forget_all()
        self.write_data(user)


class UserPasswordHandler(UserAdmin):
    """`PATCH /api/v1/auth/users/{id}/password`: set a new password; the user's sessions end."""

    permissions = {"patch": MANAGE}
    max_body_bytes = 8 * 1024

    async def patch(self, id: str) -> None:
        body = self.parse_body(PasswordResetBody)
        user = await self.hub.db.run(users.reset_password, self.actor, id, body.password[:2048], self.admin_of)
        self.hub.authenticator.forget_all()
        self.write_data(user)


class UserStatusHandler(UserAdmin):
    """`PATCH /api/v1/auth/users/{id}/status`: `active` or `disabled` (which ends their sessions)."""

    permissions = {"patch": MANAGE}

    async def patch(self, id: str) -> None:
        body = self.parse_body(StatusBody)
        assert self.principal is not None
        user = await self.hub.db.run(users.set_status, self.actor, self.principal, id, body.status, self.admin_of)
        self.hub.authenticator.forget_all()
        self.write_data(user)


class GroupsHandler(HubWide):
    """`GET|POST /api/v1/auth/groups`."""

    permissions = {"get": MANAGE, "post": MANAGE}

    async def get(self) -> None:
        self.write_page(await self.hub.db.run(groups.list_groups), None)

    async def post(self) -> None:
        body = self.parse_body(GroupBody)
        assert self.principal is not None
        group = await self.hub.db.run(
            groups.create_group, self.actor, self.principal, body.name, body.roles, body.sites, body.description
        )
        self.write_data(group, 201)


class GroupHandler(HubWide):
    """`GET|PATCH|DELETE /api/v1/auth/groups/{id}`."""

    permissions = {"get": MANAGE, "patch": MANAGE, "delete": MANAGE}

    async def get(self, id: str) -> None:
        self.write_data(await self.hub.db.run(lambda: groups.group_to_api(groups.get_group(id))))

    async def patch(self, id: str) -> None:
        changes = self.parse_changes(GroupPatchBody)
        assert self.principal is not None
        group = await self.hub.db.run(groups.update_group, self.actor, self.principal, id, changes)
        self.hub.authenticator.forget_all()
        self.write_data(group)

    async def delete(self, id: str) -> None:
        await self.hub.db.run(groups.delete_group, self.actor, id)
        self.hub.authenticator.forget_all()
        self.write_no_content()


class RolesHandler(HubWide):
    """`GET|POST /api/v1/auth/roles`: the built-in roles and custom ones."""

    permissions = {"get": MANAGE, "post": MANAGE}

    async def get(self) -> None:
        self.write_page(await self.hub.db.run(roles.list_roles), None)

    async def post(self) -> None:
        body = self.parse_body(RoleBody)
        assert self.principal is not None
        role = await self.hub.db.run(roles.create_role, self.actor, self.principal, body.name, body.permissions, body.description)
        self.write_data(role, 201)


class RoleHandler(HubWide):
    """`PATCH|DELETE /api/v1/auth/roles/{id}` (custom roles only)."""

    permissions = {"patch": MANAGE, "delete": MANAGE}

    async def patch(self, id: str) -> None:
        body = self.parse_body(RolePatchBody)
        assert self.principal is not None
        role = await self.hub.db.run(roles.update_role, self.actor, self.principal, id, body.permissions, body.description)
        self.hub.authenticator.forget_all()
        self.write_data(role)

    async def delete(self, id: str) -> None:
        await self.hub.db.run(roles.delete_role, self.actor, id)
        self.write_no_content()


class AccessPoliciesHandler(HubWide):
    """`GET|PATCH /api/v1/auth/access-policies`."""

    permissions = {"get": MANAGE, "patch": MANAGE}

    async def get(self) -> None:
        self.write_data(await self.hub.db.run(lambda: access_policies.to_api(access_policies.load())))

    async def patch(self) -> None:
        patch = self.parse_body(access_policies.AccessPoliciesPatch)
        assert self.principal is not None
        self.write_data(await self.hub.db.run(access_policies.update, self.actor, self.principal, patch))
