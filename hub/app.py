"""The Tornado application: the whole route table in one place."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import tornado.web
from hark_fleet.hub import forwarded
from hark_fleet.hub.api import (
    access,
    audit,
    auth,
    channel_map_plans,
    channel_maps,
    direct_uploads,
    discovery,
    events,
    health,
    history,
    hub_instances,
    keys,
    legal_hold,
    lifecycle,
    listen,
    listen_sessions,
    listen_settings,
    meters,
    nodes,
    notification_channels,
    notifications,
    oidc,
    recording_jobs,
    recording_profiles,
    recording_upload,
    recordings,
    recordings_library,
    retention_policies,
    scheduled_jobs,
    schedules,
    share_links,
    share_page,
    sites,
    status,
    system,
    technician,
    upload_policies,
    upload_providers,
    upload_queue,
    upload_runner,
    watchdog_policies,
)
from hark_fleet.hub.api.base import BaseHandler, NotFoundHandler
from hark_fleet.hub.api.console import CONSOLE_DIR, ConsoleFileHandler
from hark_fleet.hub.const import API_PREFIX as V1
from hark_fleet.hub.forwarded import Network
from tornado import httputil

if TYPE_CHECKING:
    from hark_fleet.hub.server import Hub

# (path template, handler). `{name}` is one path segment, passed to the handler as `name`.
ROUTES: tuple[tuple[str, type[BaseHandler]], ...] = (
    # system
    ("/healthz", system.HealthzHandler),
    ("/readyz", system.ReadyzHandler),
    ("/metrics", system.MetricsHandler),
    (f"{V1}/openapi.yaml", system.OpenApiHandler),
    # identity: sessions
    (f"{V1}/auth/login", auth.LoginHandler),
    (f"{V1}/auth/logout", auth.LogoutHandler),
    (f"{V1}/auth/logout-all", auth.LogoutAllHandler),
    (f"{V1}/auth/me", auth.MeHandler),
    (f"{V1}/auth/sessions", auth.SessionsHandler),
    (f"{V1}/auth/sessions/{{id}}", auth.SessionHandler),
    (f"{V1}/auth/password", auth.PasswordHandler),
    # identity: single sign-on
    (f"{V1}/auth/oidc/config", oidc.OidcConfigHandler),
    (f"{V1}/auth/oidc/login", oidc.OidcLoginHandler),
    (f"{V1}/auth/oidc/callback", oidc.OidcCallbackHandler),
    (f"{V1}/auth/oidc/discovery", oidc.OidcDiscoveryHandler),
    # identity: API keys
    (f"{V1}/auth/keys", keys.KeysHandler),
    (f"{V1}/auth/keys/{{id}}", keys.KeyHandler),
    (f"{V1}/auth/keys/{{id}}/rotate", keys.KeyRotateHandler),
    # identity: users, groups, roles, policies
    (f"{V1}/auth/users", access.UsersHandler),
    (f"{V1}/auth/users/facets", access.UserFacetsHandler),
    (f"{V1}/auth/users/export", access.UserExportHandler),
    (f"{V1}/auth/users/{{id}}", access.UserHandler),
    (f"{V1}/auth/users/{{id}}/access", access.UserAccessHandler),
    (f"{V1}/auth/users/{{id}}/password", access.UserPasswordHandler),
    (f"{V1}/auth/users/{{id}}/status", access.UserStatusHandler),
    (f"{V1}/auth/groups", access.GroupsHandler),
    (f"{V1}/auth/groups/{{id}}", access.GroupHandler),
    (f"{V1}/auth/roles", access.RolesHandler),
    (f"{V1}/auth/roles/{{id}}", access.RoleHandler),
    (f"{V1}/auth/access-policies", access.AccessPoliciesHandler),
    # audit
    (f"{V1}/audit-events", audit.AuditEventsHandler),
    (f"{V1}/audit-events/facets", audit.AuditFacetsHandler),
    (f"{V1}/audit-events/export", audit.AuditExportHandler),
    (f"{V1}/audit-events/{{id}}", audit.AuditEventHandler),
    # fleet
    (f"{V1}/nodes", nodes.NodesHandler),
    (f"{V1}/nodes/facets", nodes.NodeFacetsHandler),
    (f"{V1}/nodes/export", nodes.NodeExportHandler),
    (f"{V1}/nodes/enroll", nodes.EnrollHandler),
    (f"{V1}/discovered-nodes", discovery.DiscoveredNodesHandler),
    (f"{V1}/discovered-nodes/{{hardware_id}}/enroll", discovery.DiscoveredEnrollHandler),
    (f"{V1}/nodes/{{id}}", nodes.NodeHandler),
    (f"{V1}/nodes/{{id}}/actions", nodes.NodeActionsHandler),
    (f"{V1}/nodes/{{id}}/delete-preview", nodes.NodeDeletePreviewHandler),
    (f"{V1}/nodes/{{id}}/interfaces/{{iid}}", nodes.NodeInterfaceHandler),
    (f"{V1}/nodes/{{id}}/credentials/rotate", nodes.RotateHandler),
    (f"{V1}/nodes/{{id}}/meters", nodes.NodeMetersHandler),
    (f"{V1}/nodes/{{id}}/meters/history", meters.NodeMeterHistoryHandler),
    (f"{V1}/nodes/{{id}}/metrics/history", history.NodeMetricHistoryHandler),
    (f"{V1}/nodes/{{id}}/lifecycle/{{action}}", lifecycle.LifecycleActionHandler),
    (f"{V1}/nodes/{{id}}/lifecycle-jobs", lifecycle.LifecycleJobsHandler),
    (f"{V1}/nodes/{{id}}/lifecycle-jobs/{{jid}}", lifecycle.LifecycleJobHandler),
    (f"{V1}/events/stream", events.EventStreamHandler),
    (f"{V1}/meter-events", meters.MeterEventsHandler),
    # health
    (f"{V1}/health-events", health.HealthEventsHandler),
    (f"{V1}/health-events/facets", health.HealthFacetsHandler),
    (f"{V1}/health-events/export", health.HealthExportHandler),
    (f"{V1}/health-events/bulk-lifecycle", health.BulkLifecycleHandler),
    (f"{V1}/health-events/{{id}}", health.HealthEventHandler),
    (f"{V1}/health-events/{{id}}/actions", health.HealthActionsHandler),
    (f"{V1}/health-events/{{id}}/acknowledge", health.AcknowledgeHandler),
    (f"{V1}/health-events/{{id}}/suppress", health.SuppressHandler),
    (f"{V1}/health-events/{{id}}/resolve", health.ResolveHandler),
    (f"{V1}/health-events/{{id}}/reopen", health.ReopenHandler),
    # settings: channel maps (assignments are addressed by the node's id)
    (f"{V1}/settings/channel-map-templates", channel_maps.TemplatesHandler),
    (f"{V1}/settings/channel-map-templates/facets", channel_maps.TemplateFacetsHandler),
    (f"{V1}/settings/channel-map-templates/export", channel_maps.TemplateExportHandler),
    (f"{V1}/settings/channel-map-templates/{{id}}", channel_maps.TemplateHandler),
    (f"{V1}/settings/channel-map-templates/{{id}}/actions", channel_maps.TemplateActionsHandler),
    (f"{V1}/settings/channel-map-assignments", channel_maps.AssignmentsHandler),
    (f"{V1}/settings/channel-map-assignments/bulk", channel_maps.BulkAssignHandler),
    (f"{V1}/settings/channel-map-assignments/{{id}}", channel_maps.AssignmentHandler),
    (f"{V1}/settings/channel-map-assignments/{{id}}/actions", channel_maps.AssignmentActionsHandler),
    (f"{V1}/settings/channel-map-assignments/{{id}}/rollback", channel_maps.RollbackHandler),
    (f"{V1}/nodes/{{id}}/channel-map-assignments", channel_maps.AgentChannelMapHandler),  # agent route
    # recordings: create, jobs, profiles
    (f"{V1}/recordings", recordings_library.RecordingsHandler),  # GET: the library; POST: create
    (f"{V1}/recordings/{{id}}/stop", recordings.StopRecordingHandler),
    # recordings: library and upload
    (f"{V1}/recordings/facets", recordings_library.RecordingFacetsHandler),
    (f"{V1}/recordings/export", recordings_library.RecordingExportHandler),
    (f"{V1}/recordings/bulk-metadata", recordings_library.BulkMetadataHandler),
    (f"{V1}/recordings/bulk-delete", recordings_library.BulkDeleteHandler),
    (f"{V1}/recordings/{{id}}", recordings_library.RecordingHandler),
    (f"{V1}/recordings/{{id}}/actions", recordings_library.RecordingActionsHandler),
    (f"{V1}/recordings/{{id}}/context", recordings_library.RecordingContextHandler),
    (f"{V1}/recordings/{{id}}/metadata", recordings_library.RecordingMetadataHandler),
    (f"{V1}/recordings/{{id}}/legal-hold", legal_hold.LegalHoldHandler),
    (f"{V1}/recordings/{{id}}/download", recordings_library.DownloadHandler),
    (f"{V1}/recordings/{{id}}/file", recordings_library.FileHandler),
    (f"{V1}/recordings/{{id}}/playback", recordings_library.PlaybackHandler),
    (f"{V1}/recordings/{{id}}/stream", recordings_library.StreamHandler),
    (f"{V1}/recordings/{{id}}/waveform", recordings_library.WaveformHandler),
    (f"{V1}/recording-jobs", recording_jobs.RecordingJobsHandler),
    (f"{V1}/recording-jobs/facets", recording_jobs.RecordingJobFacetsHandler),
    (f"{V1}/recording-jobs/export", recording_jobs.RecordingJobExportHandler),
    (f"{V1}/recording-jobs/bulk-retry", recording_jobs.BulkRetryHandler),
    (f"{V1}/recording-jobs/bulk-stop", recording_jobs.BulkStopHandler),
    (f"{V1}/recording-jobs/{{id}}", recording_jobs.RecordingJobHandler),  # also the job's own node
    (f"{V1}/recording-jobs/{{id}}/actions", recording_jobs.RecordingJobActionsHandler),
    (f"{V1}/recording-jobs/{{id}}/retry", recording_jobs.RetryHandler),
    (f"{V1}/settings/recording-profiles", recording_profiles.ProfilesHandler),
    (f"{V1}/settings/recording-profiles/facets", recording_profiles.ProfileFacetsHandler),
    (f"{V1}/settings/recording-profiles/export", recording_profiles.ProfileExportHandler),
    (f"{V1}/settings/recording-profiles/{{id}}", recording_profiles.ProfileHandler),
    (f"{V1}/settings/recording-profiles/{{id}}/actions", recording_profiles.ProfileActionsHandler),
    # sites
    (f"{V1}/sites", sites.SitesHandler),
    (f"{V1}/sites/facets", sites.SiteFacetsHandler),
    (f"{V1}/sites/export", sites.SiteExportHandler),
    (f"{V1}/sites/{{id}}", sites.SiteHandler),
    (f"{V1}/sites/{{id}}/actions", sites.SiteActionsHandler),
    (f"{V1}/sites/{{id}}/delete-preview", sites.SiteDeletePreviewHandler),
    (f"{V1}/sites/{{id}}/approved-users", sites.SiteApprovedUsersHandler),
    (f"{V1}/sites/{{id}}/approved-users/{{iid}}", sites.SiteApprovedUserHandler),
    # watchdog policies
    (f"{V1}/settings/watchdog-policies", watchdog_policies.PoliciesHandler),
    (f"{V1}/settings/watchdog-policies/facets", watchdog_policies.PolicyFacetsHandler),
    (f"{V1}/settings/watchdog-policies/export", watchdog_policies.PolicyExportHandler),
    (f"{V1}/settings/watchdog-policies/{{id}}", watchdog_policies.PolicyHandler),
    (f"{V1}/settings/watchdog-policies/{{id}}/actions", watchdog_policies.PolicyActionsHandler),
    (f"{V1}/settings/watchdog-policies/{{id}}/calibrate", watchdog_policies.CalibrateHandler),
    (f"{V1}/settings/watchdog-policies/{{id}}/calibrations", watchdog_policies.CalibrationsHandler),
    (f"{V1}/settings/watchdog-policies/{{id}}/calibrations/{{iid}}", watchdog_policies.CalibrationHandler),
    # channel-map plans
    (f"{V1}/settings/channel-map-plans", channel_map_plans.PlansHandler),
    (f"{V1}/settings/channel-map-plans/facets", channel_map_plans.PlanFacetsHandler),
    (f"{V1}/settings/channel-map-plans/export", channel_map_plans.PlanExportHandler),
    (f"{V1}/settings/channel-map-plans/{{id}}", channel_map_plans.PlanHandler),
    (f"{V1}/settings/channel-map-plans/{{id}}/actions", channel_map_plans.PlanActionsHandler),
    (f"{V1}/settings/channel-map-plans/{{id}}/diff", channel_map_plans.PlanDiffHandler),
    (f"{V1}/settings/channel-map-plans/{{id}}/apply", channel_map_plans.PlanApplyHandler),
    (f"{V1}/settings/channel-map-plans/{{id}}/rollback", channel_map_plans.PlanRollbackHandler),
    (f"{V1}/settings/channel-map-plans/{{id}}/cancel", channel_map_plans.PlanCancelHandler),
    # schedules (issue 19) -- routes go here
    (f"{V1}/schedules", schedules.SchedulesHandler),
    (f"{V1}/schedules/facets", schedules.ScheduleFacetsHandler),
    (f"{V1}/schedules/export", schedules.ScheduleExportHandler),
    (f"{V1}/schedules/preview", schedules.PreviewHandler),
    (f"{V1}/schedules/upcoming", schedules.UpcomingHandler),
    (f"{V1}/schedules/{{id}}", schedules.ScheduleHandler),
    (f"{V1}/schedules/{{id}}/actions", schedules.ScheduleActionsHandler),
    (f"{V1}/schedules/{{id}}/occurrences", schedules.OccurrencesHandler),
    (f"{V1}/schedules/{{id}}/occurrences/{{iid}}/unskip", schedules.UnskipHandler),
    (f"{V1}/schedules/{{id}}/run-now", schedules.RunNowHandler),
    (f"{V1}/schedules/{{id}}/skip-next", schedules.SkipNextHandler),
    # upload providers (issue 20) -- routes go here
    (f"{V1}/settings/upload-providers", upload_providers.ProvidersHandler),
    (f"{V1}/settings/upload-providers/facets", upload_providers.ProviderFacetsHandler),
    (f"{V1}/settings/upload-providers/export", upload_providers.ProviderExportHandler),
    (f"{V1}/settings/upload-providers/test", upload_providers.ProviderTestUnsavedHandler),
    (f"{V1}/settings/upload-providers/{{id}}", upload_providers.ProviderHandler),
    (f"{V1}/settings/upload-providers/{{id}}/actions", upload_providers.ProviderActionsHandler),
    (f"{V1}/settings/upload-providers/{{id}}/credentials", upload_providers.ProviderCredentialsHandler),
    (f"{V1}/settings/upload-providers/{{id}}/test", upload_providers.ProviderTestHandler),
    # upload policies (issue 20) -- routes go here
    (f"{V1}/settings/upload-policies", upload_policies.PoliciesHandler),
    (f"{V1}/settings/upload-policies/facets", upload_policies.PolicyFacetsHandler),
    (f"{V1}/settings/upload-policies/export", upload_policies.PolicyExportHandler),
    (f"{V1}/settings/upload-policies/{{id}}", upload_policies.PolicyHandler),
    (f"{V1}/settings/upload-policies/{{id}}/actions", upload_policies.PolicyActionsHandler),
    (f"{V1}/settings/upload-policies/{{id}}/apply", upload_policies.PolicyApplyHandler),
    # upload queue (issue 20) -- routes go here
    (f"{V1}/upload-queue", upload_queue.QueueHandler),
    (f"{V1}/upload-queue/facets", upload_queue.QueueFacetsHandler),
    (f"{V1}/upload-queue/export", upload_queue.QueueExportHandler),
    (f"{V1}/upload-queue/overview", upload_queue.QueueOverviewHandler),
    (f"{V1}/upload-queue/{{id}}", upload_queue.QueueItemHandler),
    (f"{V1}/upload-queue/{{id}}/actions", upload_queue.QueueItemActionsHandler),
    (f"{V1}/upload-queue/{{id}}/retry", upload_queue.RetryHandler),
    (f"{V1}/recordings/{{id}}/upload-queue", upload_queue.RecordingEnqueueHandler),
    (f"{V1}/bulk-upload-queue", upload_queue.BulkEnqueueHandler),
    # upload runner (issue 20) -- routes go here
    (f"{V1}/upload-runner", upload_runner.UploadRunnerHandler),
    (f"{V1}/upload-runner/actions", upload_runner.UploadRunnerActionsHandler),
    (f"{V1}/upload-runner/run", upload_runner.UploadRunnerRunHandler),
    (f"{V1}/upload-runner/pause", upload_runner.UploadRunnerPauseHandler),
    (f"{V1}/upload-runner/resume", upload_runner.UploadRunnerResumeHandler),
    # retention policies (issue 20) -- routes go here
    (f"{V1}/settings/retention-policies", retention_policies.PoliciesHandler),
    (f"{V1}/settings/retention-policies/facets", retention_policies.PolicyFacetsHandler),
    (f"{V1}/settings/retention-policies/export", retention_policies.PolicyExportHandler),
    (f"{V1}/settings/retention-policies/{{id}}", retention_policies.PolicyHandler),
    (f"{V1}/settings/retention-policies/{{id}}/actions", retention_policies.PolicyActionsHandler),
    (f"{V1}/settings/retention-policies/{{id}}/preview", retention_policies.PolicyPreviewHandler),
    (f"{V1}/retention-runs", retention_policies.RunsHandler),
    (f"{V1}/retention-runs/{{id}}", retention_policies.RunHandler),
    (f"{V1}/recordings/{{id}}/copies", retention_policies.CopiesHandler),
    (f"{V1}/nodes/{{id}}/cache-evictions", retention_policies.CacheEvictionsHandler),  # agent route
    # notification channels (issue 21) -- routes go here
    (f"{V1}/notification-channels", notification_channels.ChannelsHandler),
    (f"{V1}/notification-channels/facets", notification_channels.ChannelFacetsHandler),
    (f"{V1}/notification-channels/export", notification_channels.ChannelExportHandler),
    (f"{V1}/notification-channels/test", notification_channels.ChannelTestUnsavedHandler),
    (f"{V1}/notification-channels/{{id}}", notification_channels.ChannelHandler),
    (f"{V1}/notification-channels/{{id}}/actions", notification_channels.ChannelActionsHandler),
    (f"{V1}/notification-channels/{{id}}/config", notification_channels.ChannelConfigHandler),
    (f"{V1}/notification-channels/{{id}}/test", notification_channels.ChannelTestHandler),
    # notifications: my notifications and notify settings (issue 21) -- routes go here
    (f"{V1}/notifications", notifications.NotificationsHandler),
    (f"{V1}/notifications/facets", notifications.NotificationFacetsHandler),
    (f"{V1}/notifications/overview", notifications.NotificationOverviewHandler),
    (f"{V1}/notifications/export", notifications.NotificationExportHandler),
    (f"{V1}/notifications/{{id}}", notifications.NotificationHandler),
    (f"{V1}/notification-channels/{{id}}/deliveries", notifications.ChannelDeliveriesHandler),
    (f"{V1}/settings/notifications", notifications.NotifySettingsHandler),
    # live listen (issue 23) -- routes go here
    (f"{V1}/nodes/{{id}}/listen", listen.NodeListenHandler),
    (f"{V1}/nodes/{{id}}/listen/stream", listen.ListenStreamHandler),
    (f"{V1}/nodes/{{id}}/listen/chunk", listen.AgentListenChunkHandler),  # agent route; here as it must precede {sid}
    (f"{V1}/nodes/{{id}}/listen/{{sid}}", listen.NodeListenSessionHandler),
    # listen sessions (issue 23) -- routes go here
    (f"{V1}/listen-sessions", listen_sessions.SessionsHandler),
    (f"{V1}/listen-sessions/active", listen_sessions.ActiveSessionsHandler),
    (f"{V1}/listen-sessions/facets", listen_sessions.SessionFacetsHandler),
    (f"{V1}/listen-sessions/export", listen_sessions.SessionExportHandler),
    (f"{V1}/listen-sessions/{{id}}", listen_sessions.SessionHandler),
    (f"{V1}/listen-sessions/{{id}}/disconnect", listen_sessions.DisconnectHandler),
    # listen settings (issue 23) -- routes go here
    (f"{V1}/settings/listen", listen_settings.ListenSettingsHandler),
    # share links and the public share page (issue 23) -- routes go here
    (f"{V1}/recordings/{{id}}/share-links", share_links.RecordingShareLinksHandler),
    (f"{V1}/share-links", share_links.ShareLinksHandler),
    (f"{V1}/share-links/facets", share_links.ShareLinkFacetsHandler),
    (f"{V1}/share-links/export", share_links.ShareLinkExportHandler),
    (f"{V1}/share-links/{{id}}", share_links.ShareLinkHandler),
    ("/s/{token}", share_page.SharePageHandler),
    ("/s/{token}/audio", share_page.ShareAudioHandler),
    ("/s/{token}/download", share_page.ShareDownloadHandler),
    # the hub instances of the deployment and their singleton leases (issue 24)
    (f"{V1}/hub-instances", hub_instances.InstancesHandler),
    (f"{V1}/hub-instances/facets", hub_instances.InstanceFacetsHandler),
    (f"{V1}/hub-instances/export", hub_instances.InstanceExportHandler),
    (f"{V1}/hub-instances/leases", hub_instances.LeasesHandler),
    (f"{V1}/hub-instances/{{id}}", hub_instances.InstanceHandler),
    # fleet status and load
    (f"{V1}/status", status.StatusHandler),
    ("/api/load", status.LoadHandler),  # public, for a load balancer
    # agent routes (a node's own credential)
    (f"{V1}/nodes/{{id}}/config", nodes.AgentConfigHandler),
    (f"{V1}/nodes/{{id}}/heartbeat", nodes.AgentHeartbeatHandler),
    (f"{V1}/nodes/{{id}}/health-events", nodes.AgentHealthHandler),
    (f"{V1}/nodes/{{id}}/meter-frame", nodes.AgentMeterFrameHandler),
    (f"{V1}/nodes/{{id}}/technician-access", technician.TechnicianAccessHandler),
    (f"{V1}/nodes/{{id}}/technician-token", technician.TechnicianTokenHandler),
    (f"{V1}/nodes/{{id}}/commissioning-reports", technician.CommissioningReportsHandler),
    (f"{V1}/nodes/{{id}}/recording-jobs/claim-next", recording_jobs.ClaimNextHandler),
    (f"{V1}/recording-jobs/{{id}}/heartbeat", recording_jobs.JobHeartbeatHandler),
    (f"{V1}/recording-jobs/{{id}}/cancelled", recording_jobs.JobCancelledHandler),
    (f"{V1}/recording-jobs/{{id}}/failed", recording_jobs.JobFailedHandler),
    # live listen chunks (agent, issue 23) -- routes go here
    # (POST /nodes/{id}/listen/chunk is in the live listen block above: it must come before /nodes/{id}/listen/{sid})
    # scheduled jobs (agent, issue 19) -- routes go here
    (f"{V1}/nodes/{{id}}/recording-jobs/scheduled", scheduled_jobs.ScheduledJobsHandler),
    (f"{V1}/recording-jobs/{{id}}/missed", scheduled_jobs.JobMissedHandler),
    (f"{V1}/recordings/{{rid}}/cache-file", recording_upload.CacheFileHandler),
    # direct uploads (agent, issue 20) -- routes go here
    (f"{V1}/nodes/{{id}}/direct-uploads/claim", direct_uploads.ClaimHandler),
    (f"{V1}/direct-uploads/{{id}}/parts", direct_uploads.PartsHandler),
    (f"{V1}/direct-uploads/{{id}}/progress", direct_uploads.ProgressHandler),
    (f"{V1}/direct-uploads/{{id}}/complete", direct_uploads.CompleteHandler),
    (f"{V1}/direct-uploads/{{id}}/failed", direct_uploads.FailedHandler),
)


def template_to_regex(template: str) -> str:
    """`/nodes/{id}` -> `/nodes/(?P<id>[^/]+)$`."""
    return re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"


class HubApplication(tornado.web.Application):
    """The hub's application: requests from a trusted proxy carry the client's address (`hub.forwarded`)."""

    def __init__(self, trusted_proxies: tuple[Network, ...], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trusted_proxies = trusted_proxies

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        forwarded.apply(request, self.trusted_proxies)
        return super().find_handler(request, **kwargs)


def make_app(hub: Hub, **settings: Any) -> tornado.web.Application:
    """Build the application with every route bound to `hub`, and the console's files."""
    handlers: list[Any] = [(template_to_regex(path), handler, {"hub": hub, "route": path}) for path, handler in ROUTES]
    handlers += [
        (r"/()$", ConsoleFileHandler, {"path": str(CONSOLE_DIR), "default_filename": "index.html"}),
        (r"/console/(.*)", ConsoleFileHandler, {"path": str(CONSOLE_DIR)}),
    ]
    return HubApplication(
        hub.config.trusted_proxies,
        handlers,
        default_handler_class=NotFoundHandler,
        default_handler_args={"hub": hub, "route": "unmatched"},
        compress_response=False,
        xheaders=False,
        **settings,
    )
