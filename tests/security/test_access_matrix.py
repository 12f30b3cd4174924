"""Every URL pattern and API route, with every role: who gets what, and nothing leaks.

`MATRIX` names every route the URL configuration has (the first test fails when a route is added
without an entry here). Each entry says what kind of access the route grants; `_expected` turns
the kind into the status each role must get. A role that may not see study A gets a 302 to the
login page (no account), 401 (API, no account), 404 (an account that may not see the study; 403
where it may see the study but not change it) and never a 5xx; the body of such a response holds
none of A's data (title, prompt texts, participant ids, moral context). Routes with object ids are
also asked for study B's objects under A's URL (and the other way round for participants).

/admin/ is Django's admin: one prefix for the site admin only, checked on a few representative
pages rather than route by route.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.factories import UserFactory
from tests.security.conftest import ROLES, World

# --- Kinds of access ------------------------------------------------------------------------------

PUBLIC = "public"  # anyone; shows no study's data
ACCOUNT = "account"  # any researcher account; shows only the studies the account may see
READ = "read"  # the study's researchers: owner, viewer, editor, site admin
EDIT = "edit"  # owner, editor, site admin
MANAGE = "manage"  # owner, site admin (who else sees the study)
PARTICIPANT = "participant"  # annotator pages (public by link); only A's session participant sees A's pairs
PARTICIPANT_API = "participant_api"  # a participant token; each participant sees their own pairs only

RESEARCHERS = ("owner", "viewer", "editor", "stranger", "admin")
NO_ACCOUNT = ("anonymous", "participant_session", "participant_token", "participant_other")
MAY_SEE = {
    PUBLIC: (),
    ACCOUNT: ("owner", "viewer", "editor", "admin"),
    READ: ("owner", "viewer", "editor", "admin"),
    EDIT: ("owner", "viewer", "editor", "admin"),  # the viewer sees A on the page it may not change
    MANAGE: ("owner", "viewer", "editor", "admin"),
    PARTICIPANT: ("participant_session",),
    PARTICIPANT_API: ("participant_token",),
}
ALLOWED = {
    PUBLIC: ROLES,
    ACCOUNT: RESEARCHERS,
    READ: ("owner", "viewer", "editor", "admin"),
    EDIT: ("owner", "editor", "admin"),
    MANAGE: ("owner", "admin"),
    PARTICIPANT: ROLES,
    PARTICIPANT_API: ("participant_token",),
}


@dataclass(frozen=True)
class Call:
    method: str  # "get", "post", "patch", "delete"
    ok: frozenset[int]  # statuses an allowed role may get
    data: Callable[[World], dict[str, Any]] | None = None
    htmx: bool = False
    # Statuses for particular roles, overriding what the route's kind says (checked the same way).
    expect: tuple[tuple[str, frozenset[int]], ...] = ()
    kind: str | None = None  # where one method of a route needs more than the route's kind (edit vs read)


@dataclass(frozen=True)
class Route:
    kind: str
    calls: tuple[Call, ...]
    kwargs: Callable[[World, str], dict[str, Any]] | None = None  # (world, "a" | "b") -> URL kwargs
    object_ids: tuple[str, ...] = field(default=())  # kwargs that name an object (swapped for B's)


def get(*ok: int, htmx: bool = False) -> Call:
    return Call("get", frozenset(ok or (200,)), htmx=htmx)


def post(
    *ok: int, data: Callable[[World], dict[str, Any]] | None = None, htmx: bool = False, kind: str | None = None
) -> Call:
    return Call("post", frozenset(ok), data=data, htmx=htmx, kind=kind)


def _s(world: World, which: str) -> Any:
    return world.a if which == "a" else world.b


def kw_slug(world: World, which: str) -> dict[str, Any]:
    return {"slug": world.a.study.slug}


def kw(**names: Callable[[Any], Any]) -> Callable[[World, str], dict[str, Any]]:
    """URL kwargs: the slug of A, and each named object taken from A (or B, for the cross checks)."""

    def fill(world: World, which: str) -> dict[str, Any]:
        objects = _s(world, which)
        return {"slug": world.a.study.slug, **{name: get_id(objects) for name, get_id in names.items()}}

    return fill


def no_kwargs(world: World, which: str) -> dict[str, Any]:
    return {}


def _judgment_of(objects: Any) -> dict[str, Any]:
    return {"served_id": str(objects.token_served.pk), "choice": "a", "strength": 1}


MATRIX: dict[str, Route] = {
    # --- Site --------------------------------------------------------------------------------------
    "/": Route(PUBLIC, (get(302),), no_kwargs),
    "login": Route(PUBLIC, (get(200, 302),), no_kwargs),  # a logged-in user is shown the form again
    "logout": Route(PUBLIC, (post(302),), no_kwargs),
    "schema": Route(PUBLIC, (get(),), no_kwargs),
    "swagger-ui": Route(PUBLIC, (get(),), no_kwargs),
    "redoc": Route(PUBLIC, (get(),), no_kwargs),
    # --- Researcher pages --------------------------------------------------------------------------
    "elicitation:study_list": Route(ACCOUNT, (get(),), no_kwargs),
    "elicitation:study_create": Route(ACCOUNT, (get(), post(200)), no_kwargs),
    "elicitation:study_edit": Route(EDIT, (get(), post(200)), kw_slug),
    "elicitation:study_survey": Route(EDIT, (get(), post(200, 302)), kw_slug),
    "elicitation:study_status": Route(EDIT, (post(302),), kw_slug),
    "elicitation:attention_checks": Route(EDIT, (get(), post(200)), kw_slug),
    "elicitation:attention_check_remove": Route(
        EDIT, (post(302),), kw(pair_id=lambda o: o.attention_pair.pk), ("pair_id",)
    ),
    "imports:import": Route(EDIT, (get(), post(200)), kw_slug),
    "monitor:study_detail": Route(READ, (get(),), kw_slug),
    "exports:export": Route(READ, (get(), post(200)), kw_slug),
    "exports:job_status": Route(
        READ, (get(302), get(286, htmx=True)), kw(job_id=lambda o: o.export_job.pk), ("job_id",)
    ),
    "exports:download": Route(READ, (get(),), kw(job_id=lambda o: o.export_job.pk), ("job_id",)),
    "modeling:study_model": Route(READ, (get(),), kw_slug),
    "modeling:train": Route(EDIT, (post(302),), kw_slug),
    "modeling:progress": Route(READ, (get(302), get(286, htmx=True)), kw_slug),
    "modeling:download": Route(READ, (get(),), kw(run_id=lambda o: o.run.pk), ("run_id",)),
    "moral:overview": Route(READ, (get(),), kw_slug),
    "moral:legitimacy": Route(READ, (get(),), kw_slug),
    "moral:mode": Route(EDIT, (post(302),), kw_slug),
    "moral:question_create": Route(EDIT, (post(302),), kw_slug),
    "moral:question_edit": Route(EDIT, (post(302),), kw(question_id=lambda o: o.question.pk), ("question_id",)),
    "moral:aggregate": Route(EDIT, (post(302),), kw_slug),
    "moral:export_json": Route(READ, (get(),), kw_slug),
    "moral:export_graphml": Route(READ, (get(),), kw_slug),
    "moral:context": Route(READ, (get(),), kw(context_id=lambda o: o.context.pk), ("context_id",)),
    "moral:context_edit": Route(EDIT, (post(302),), kw(context_id=lambda o: o.context.pk), ("context_id",)),
    "moral:card_seed": Route(EDIT, (post(302),), kw(context_id=lambda o: o.context.pk), ("context_id",)),
    "moral:card": Route(
        READ, (get(),), kw(context_id=lambda o: o.context.pk, card_id=lambda o: o.seed_card.pk),
        ("context_id", "card_id"),
    ),
    "moral:merge": Route(EDIT, (post(302),), kw(context_id=lambda o: o.context.pk), ("context_id",)),
    "moral:story": Route(EDIT, (post(302),), kw(context_id=lambda o: o.context.pk), ("context_id",)),
    "insight:dashboard": Route(READ, (get(),), kw_slug),
    "insight:quality": Route(READ, (get(),), kw_slug),
    "insight:rankings": Route(READ, (get(),), kw_slug),
    "insight:recompute": Route(EDIT, (post(302),), kw_slug),
    "insight:progress": Route(READ, (get(302), get(286, htmx=True)), kw_slug),
    "insight:exclude": Route(EDIT, (post(302),), kw_slug),
    "insight:revoke": Route(EDIT, (post(302, data=lambda w: {"participant": w.a.participant.pk}),), kw_slug),
    "insight:exclude_rule": Route(EDIT, (post(302),), kw_slug),
    "insight:plot": Route(READ, (get(),), lambda w, _: {"slug": w.a.study.slug, "name": "agreement", "fmt": "svg"}),
    # --- Annotator pages (the study link) ----------------------------------------------------------
    "annotation:entry": Route(PARTICIPANT, (get(302),), kw_slug),
    "annotation:consent": Route(PARTICIPANT, (get(200, 302), post(302, 400)), kw_slug),
    "annotation:declined": Route(PARTICIPANT, (get(),), kw_slug),
    "annotation:survey": Route(PARTICIPANT, (get(302), post(302)), kw_slug),
    "annotation:instructions": Route(PARTICIPANT, (get(200, 302), post(302)), kw_slug),
    "annotation:judge": Route(PARTICIPANT, (get(302), post(302)), kw_slug),
    "annotation:done": Route(PARTICIPANT, (get(302),), kw_slug),
    "annotation:withdraw": Route(PARTICIPANT, (get(200, 302), post(302, 400)), kw_slug),
    "annotation:withdrawn": Route(PARTICIPANT, (get(),), kw_slug),
    "values:start": Route(PARTICIPANT, (get(200, 302), post(302)), kw_slug),
    "values:interview": Route(PARTICIPANT, (get(200, 302), post(200, 302, 422)), kw(card_id=lambda o: o.card.pk),
                              ("card_id",)),
    "values:card": Route(PARTICIPANT, (get(302), post(302)), kw(card_id=lambda o: o.card.pk), ("card_id",)),
    "values:similar": Route(PARTICIPANT, (get(302), post(302)), kw(card_id=lambda o: o.card.pk), ("card_id",)),
    "values:vote": Route(PARTICIPANT, (get(302), post(302, 400)), kw_slug),
    "values:legitimacy": Route(PARTICIPANT, (get(302), post(302)), kw_slug),
    "values:done": Route(PARTICIPANT, (get(302),), kw_slug),
    # --- API ---------------------------------------------------------------------------------------
    "api-study-list": Route(ACCOUNT, (get(), post(400)), no_kwargs),
    # PATCH: see test_viewer_may_not_change_the_study_by_api (viewers get 403, they may read the study).
    "api-study-detail": Route(READ, (get(),), kw_slug),
    "api-study-prompts": Route(READ, (get(),), kw_slug),
    "api-study-collaborators": Route(MANAGE, (post(400),), kw_slug),
    "api-study-collaborator": Route(MANAGE, (Call("delete", frozenset({204})),),
                                    lambda w, _: {"slug": w.a.study.slug, "username": w.users["viewer"].username}),
    "api-import-responses": Route(EDIT, (post(400),), kw_slug),
    "api-import-comparisons": Route(EDIT, (post(400),), kw_slug),
    "api-judgment-list": Route(ACCOUNT, (get(),), no_kwargs),
    # An external id that exists already: the same participant with a new token, for the study's
    # editors only (their platform collected the consent); nobody else learns the id exists.
    "api-participant-create": Route(
        EDIT, (post(201, data=lambda w: {"external_id": "ext-new"}), post(400),
               post(201, data=lambda w: {"external_id": w.a.participant.external_id})), kw_slug
    ),
    # B's participant gets their own pair from /next, and 404 for A's served pair.
    "api-participant-next": Route(
        PARTICIPANT_API, (Call("get", frozenset({200}), expect=(("participant_other", frozenset({200})),)),),
        no_kwargs,
    ),
    "api-participant-judgment": Route(
        PARTICIPANT_API,
        (Call("post", frozenset({201}), data=lambda w: _judgment_of(w.a),
              expect=(("participant_other", frozenset({404})),)),),
        no_kwargs,
    ),
    # Viewers may export what they may read, as on the export page.
    "api-export-create": Route(READ, (post(202, data=lambda w: {"format": "jsonl"}), post(400)), kw_slug),
    "api-export-detail": Route(READ, (get(),), lambda w, _: {"job_id": w.a.export_job.pk}),
    "api-export-download": Route(READ, (get(),), lambda w, _: {"job_id": w.a.export_job.pk}),
    "api-study-predict": Route(READ, (post(400),), kw_slug),
    "api-study-training-runs": Route(READ, (get(), post(400, data=lambda w: {"kind": "nope"}, kind=EDIT)), kw_slug),
    "api-training-run-detail": Route(READ, (get(),), lambda w, _: {"run_id": w.a.run.pk}),
    "api-training-run-download": Route(READ, (get(),), lambda w, _: {"run_id": w.a.run.pk}),
    "api-study-moral-graph": Route(READ, (get(),), kw_slug),
    "api-study-moral-graph-graphml": Route(READ, (get(),), kw_slug),
    "api-study-analytics": Route(READ, (get(), post(202, kind=EDIT)), kw_slug),
    "api-study-analytics-status": Route(READ, (get(),), kw_slug),
    "api-study-analytics-plot": Route(
        READ, (get(),), lambda w, _: {"slug": w.a.study.slug, "name": "agreement", "fmt": "svg"}
    ),
}


# --- Walking the URL configuration ---------------------------------------------------------------


def _route_keys(resolver: URLResolver, namespace: str = "", prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, [namespace, pattern.namespace or ""]))
            if inner == "admin":
                keys.add("admin")  # the whole prefix, see test_admin_is_for_site_admins_only
                continue
            keys |= _route_keys(pattern, inner, route)
        else:
            assert isinstance(pattern, URLPattern)
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            keys.add(name or "/" + route)
    return keys


def test_every_route_has_an_entry_in_the_matrix() -> None:
    keys = _route_keys(get_resolver())
    assert keys == {*MATRIX, "admin"}, (
        f"routes without a matrix entry: {sorted(keys - {*MATRIX, 'admin'})}; "
        f"entries without a route: {sorted({*MATRIX} - keys)}"
    )


# --- Requests ------------------------------------------------------------------------------------


def _url(name: str, route: Route, world: World, which: str = "a") -> str:
    if name.startswith("/"):
        return name
    kwargs = route.kwargs(world, which) if route.kwargs else {}
    return reverse(name, kwargs=kwargs)


def _body(response: HttpResponse) -> str:
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)  # the test client closes it at the end
    else:
        content = response.content
    return content.decode("utf-8", errors="replace")


def _request(world: World, role: str, call: Call, url: str) -> tuple[int, str, str]:
    """One request as `role`, rolled back afterwards, so each role sees the same world."""
    client = world.client(role)
    headers = {"HTTP_HX_REQUEST": "true"} if call.htmx else {}
    data = call.data(world) if call.data else {}
    with transaction.atomic():
        if call.method in ("get", "delete"):
            response = getattr(client, call.method)(url, **headers)
        elif url.startswith("/api/"):
            response = getattr(client, call.method)(url, data, content_type="application/json", **headers)
        else:
            response = getattr(client, call.method)(url, data, **headers)
        body = _body(response)
        transaction.set_rollback(True)
    return response.status_code, body, response.get("Location", "")


def _denied_statuses(*, kind: str, role: str, api: bool) -> set[int]:
    if kind == PARTICIPANT_API:
        return {401}  # researchers' sessions and tokens mean nothing here
    if role in NO_ACCOUNT:
        return {401} if api else {302}
    if kind == MANAGE and role in ("viewer", "editor"):
        return {403}  # they may see the study, not decide who else does
    return {404}


def _leaks(body: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in body]


def _check(world: World, name: str, route: Route, role: str, call: Call) -> list[str]:
    url = _url(name, route, world)
    kind = call.kind or route.kind
    status, body, location = _request(world, role, call, url)
    where = f"{call.method.upper()} {url}{' (htmx)' if call.htmx else ''} as {role}: {status}"
    problems = []
    if status >= 500:
        return [f"{where}: server error"]
    if (special := dict(call.expect).get(role)) is not None:
        if status not in special:
            problems.append(f"{where}, expected one of {sorted(special)}")
    elif role in ALLOWED[kind]:
        if status not in call.ok:
            problems.append(f"{where}, expected one of {sorted(call.ok)}")
    else:
        denied = _denied_statuses(kind=kind, role=role, api=url.startswith("/api/"))
        if status not in denied:
            problems.append(f"{where}, expected {sorted(denied)}")
        if status == 302 and not location.startswith(reverse("login")):
            problems.append(f"{where}: redirects to {location}, not to the login page")
    if role not in MAY_SEE[kind] and (leaked := _leaks(body, _secrets_for(world, route, role))):
        problems.append(f"{where}: body shows {leaked}")
    if kind in (PARTICIPANT, PARTICIPANT_API) and (leaked := _leaks(body, _others_of(world, role))):
        problems.append(f"{where}: body shows another participant's data {leaked}")
    return problems


def _others_of(world: World, role: str) -> list[str]:
    """What a participant of A must not see: the other participant's id, and anything of B."""
    others = {"participant_session": world.a.token_participant.external_id,
              "participant_token": world.a.participant.external_id}
    return [others[role], *world.secrets_b] if role in others else []


def _secrets_for(world: World, route: Route, role: str) -> list[str]:
    if route.kind == PARTICIPANT:
        # The study link is public: its title and consent text are what it shows everybody.
        return [s for s in world.secrets_a if s != world.a.study.title]
    return world.secrets_a


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_route_answers_each_role_as_the_matrix_says(world: World, name: str) -> None:
    route = MATRIX[name]
    problems = [
        problem
        for call in route.calls
        for role in ROLES  # unsafe calls too: each role's request is rolled back
        for problem in _check(world, name, route, role, call)
    ]
    assert not problems, "\n".join(problems)


# --- Objects of another study under this study's URL ----------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n, r in MATRIX.items() if r.object_ids and r.kind != PARTICIPANT))
def test_another_studys_object_under_this_studys_url_is_404(world: World, name: str) -> None:
    """The owner of A asks for B's job, run, context, card... with A's slug: 404, nothing of B."""
    route = MATRIX[name]
    url = _url(name, route, world, which="b")
    for call in route.calls:
        status, body, _ = _request(world, "owner", call, url)
        assert status == 404, f"{call.method.upper()} {url}: {status}"
        assert not _leaks(body, world.secrets_b), f"{call.method.upper()} {url} shows B's data"


@pytest.mark.parametrize("name", sorted(n for n, r in MATRIX.items() if r.object_ids and r.kind == PARTICIPANT))
def test_another_participants_card_is_404(world: World, name: str) -> None:
    """A's participant asks for a card of B's participant, or of another participant of A."""
    route = MATRIX[name]
    other_card_in_a = world.a.card.__class__.objects.create(
        context=world.a.context, participant=world.a.token_participant, status=world.a.card.status,
    )
    urls = [_url(name, route, world, which="b"),
            reverse(name, kwargs={"slug": world.a.study.slug, "card_id": other_card_in_a.pk})]
    for url in urls:
        for call in route.calls:
            status, body, _ = _request(world, "participant_session", call, url)
            assert status == 404, f"{call.method.upper()} {url}: {status}"
            assert not _leaks(body, world.secrets_b), f"{call.method.upper()} {url} shows B's data"


def test_another_participants_served_pair_is_refused(world: World) -> None:
    """A served pair of someone else, submitted by API or by the judgment page: 404, nothing stored."""
    from annotation.models import Judgment

    before = Judgment.objects.count()
    api = reverse("api-participant-judgment")
    for role, served in (("participant_token", world.a.served), ("participant_token", world.b.served),
                         ("participant_other", world.a.token_served)):
        call = post(data=lambda w, s=served: {"served_id": str(s.pk), "choice": "a", "strength": 1})
        status, body, _ = _request(world, role, call, api)
        assert status == 404, (role, status, body)
        assert not _leaks(body, world.secrets_a + world.secrets_b)
    # The judgment page itself (not the values interview, which this study asks for first).
    type(world.a.study).objects.filter(pk=world.a.study.pk).update(moral_graph_mode="off")
    page = reverse("annotation:judge", kwargs={"slug": world.a.study.slug})
    for served in (world.a.token_served, world.b.served):
        call = post(data=lambda w, s=served: {"served_id": str(s.pk), "choice": "a", "strength": "1"})
        status, body, _ = _request(world, "participant_session", call, page)
        assert status == 404, (status, body[:300])
        # The page shows the participant's own pair again (its texts may be the same pool pair).
        assert str(served.pk) not in body and str(world.a.served.pk) in body
        assert not _leaks(body, world.secrets_b)
    assert Judgment.objects.count() == before


def test_a_participants_recruitment_id_resumes_only_in_their_own_browser(world: World) -> None:
    """The study link with the id of one of A's participants, opened by every role: only the browser
    that is that participant resumes; everyone else (researchers too, the other participant, B's)
    gets a 409 that shows nothing of the participant, sets no session and writes nothing."""
    from annotation.models import Judgment, Participant, ServedPair

    def stored() -> tuple[int, int, int]:
        return Participant.objects.count(), ServedPair.objects.count(), Judgment.objects.count()

    before = stored()
    entry = reverse("annotation:entry", kwargs={"slug": world.a.study.slug})
    own = {world.a.participant: "participant_session", world.a.token_participant: None}
    for participant, own_role in own.items():
        for query in (f"?pid={participant.external_id}", f"?PROLIFIC_PID={participant.external_id}&SESSION_ID=x"):
            for role in ROLES:
                response = world.client(role).get(entry + query)
                where = f"GET {entry}{query} as {role}: {response.status_code}"
                if role == own_role:
                    assert response.status_code == 302 and response["Location"].startswith(entry), where
                    continue
                body = response.content.decode()
                assert response.status_code == 409 and "already started the study" in body, where
                assert django_settings.SESSION_COOKIE_NAME not in response.cookies, where
                leaked = _leaks(body, [s for s in world.secrets_a + world.secrets_b if s != world.a.study.title])
                assert not leaked and str(world.a.served.pk) not in body, f"{where}: body shows {leaked}"
    assert stored() == before


def test_viewer_may_not_change_the_study_by_api(world: World) -> None:
    url = reverse("api-study-detail", kwargs={"slug": world.a.study.slug})
    for role, expected in (("viewer", 403), ("stranger", 404), ("anonymous", 401), ("participant_token", 401),
                           ("editor", 200)):
        call = Call("patch", frozenset(), data=lambda w: {"title": "Renamed"})
        status, body, _ = _request(world, role, call, url)
        assert status == expected, (role, status, body[:300])
        if role in ("stranger", "anonymous", "participant_token"):
            assert not _leaks(body, world.secrets_a)


# --- /admin/ --------------------------------------------------------------------------------------


def test_admin_is_for_site_admins_only(world: World) -> None:
    staff = UserFactory(username="staff-researcher", is_staff=True)  # staff, but not a site admin
    a = world.a
    urls = [
        reverse("admin:index"),
        reverse("admin:elicitation_study_changelist"),
        reverse("admin:elicitation_study_change", args=[a.study.pk]),
        reverse("admin:annotation_participant_changelist"),
        reverse("admin:annotation_judgment_changelist"),
    ]
    for url in urls:
        for role in ROLES:
            status, body, location = _request(world, role, get(), url)
            if role == "admin":
                assert status == 200, (url, status)
                continue
            assert status == 302 and location.startswith(reverse("admin:login")), (url, role, status)
            assert not _leaks(body, world.secrets_a)
        client = world.client("anonymous")
        client.force_login(staff)
        response = client.get(url)
        assert response.status_code == 302, (url, "staff", response.status_code)
        assert not _leaks(response.content.decode(), world.secrets_a)
