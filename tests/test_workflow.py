"""The state machine: every allowed step walked, every forbidden one refused, by role and office."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cases.config import Municipality
from cases.db import transaction
from cases.errors import Forbidden, IllegalTransition, Invalid, NotFound
from cases.models import Case, OutboxMessage, StaffNotification, Status, User
from cases.notify import Ctx
from cases.registration import prepare_case, register
from cases.services import create_user
from cases.workflow import MOVES, STEPS, Outcome, check, perform, system_step

T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)  # 10:00 in Rome: outside quiet hours

# The specification, written independently of cases/workflow.py's table.
ROLES_FOR = {
    "assign": {"urp"},
    "dispatch": {"referent"},
    "take": {"operator", "referent"},
    "note": {"urp", "referent", "operator"},
    "resolve": {"operator", "referent"},
    "close": {"urp"},
    "reopen": {"urp"},
    "duplicate": {"urp"},
    "not_competent": {"urp"},
    "annul": set(),
}
SOURCES = {
    "assign": {"received", "assigned"},
    "dispatch": {"assigned", "in_progress"},
    "take": {"assigned"},
    "note": {s.value for s in Status},
    "resolve": {"in_progress"},
    "close": {"resolved"},
    "reopen": {"closed"},
    "duplicate": {"received", "assigned", "in_progress"},
    "not_competent": {"received", "assigned"},
    "annul": {s.value for s in Status} - {"annulled"},
}
ACTORS = ["urp", "referent", "operator", "referent_other", "operator_other", "supervisor", "admin"]


def test_the_spec_covers_every_step() -> None:
    assert set(STEPS) == set(ROLES_FOR) == set(SOURCES)


class World:
    """A municipality with one user per role, and helpers to bring a case to any status."""

    def __init__(self, sessions: sessionmaker[Session], muni: Municipality):
        self.sessions = sessions
        self.muni = muni
        self.now = T0
        offices = [o.code for o in muni.offices if not o.urp]
        self.office, self.other_office = offices[0], offices[1]
        with transaction(sessions) as s:
            c = self.ctx()
            for name, role, office in (
                ("urp", "urp", None),
                ("referent", "referent", self.office),
                ("operator", "operator", self.office),
                ("operator2", "operator", self.office),
                ("referent_other", "referent", self.other_office),
                ("operator_other", "operator", self.other_office),
                ("supervisor", "supervisor", None),
                ("admin", "admin", None),
            ):
                create_user(s, c, name, role, office, full_name=name.replace("_", " ").title())

    def ctx(self) -> Ctx:
        return Ctx(self.muni, self.now, base_url="https://comune.example.it")

    def user(self, s: Session, name: str) -> User:
        u = s.scalar(select(User).where(User.name == name))
        assert u is not None
        return u

    def new_case(self, text: str = "segnalazione generica senza parole chiave") -> int:
        with transaction(self.sessions) as s:
            return register(
                s,
                self.ctx(),
                confirm=True,
                channel="counter",
                phone="+393331234567",
                text=text,
                actor=self.user(s, "urp"),
            ).case.id

    def do(self, case_id: int, who: str, action: str, body: dict | None = None) -> Case:  # type: ignore[type-arg]
        with transaction(self.sessions) as s:
            case = s.get(Case, case_id)
            assert case is not None
            perform(s, self.ctx(), self.user(s, who), case, action, body or {})
            return case

    def case_in(self, status: str) -> int:
        cid = self.new_case()
        path: dict[str, list[tuple[str, str, dict]]] = {  # type: ignore[type-arg]
            "received": [],
            "assigned": [("urp", "assign", {"office": self.office})],
            "in_progress": [("urp", "assign", {"office": self.office}), ("operator", "take", {})],
            "resolved": [
                ("urp", "assign", {"office": self.office}),
                ("operator", "take", {}),
                ("operator", "resolve", {"note": "fatto"}),
            ],
            "closed": [
                ("urp", "assign", {"office": self.office}),
                ("operator", "take", {}),
                ("operator", "resolve", {}),
                ("urp", "close", {"reply": "Risolto, grazie."}),
            ],
            "duplicate": [("urp", "duplicate", {"of": self.protocol(self.new_case())})],
            "not_competent": [("urp", "not_competent", {"reply": "Competente la Provincia."})],
            "annulled": [("supervisor", "annul", {"reason": "errore di registrazione"})],
        }
        for who, action, body in path[status]:
            self.do(cid, who, action, body)
        return cid

    def protocol(self, cid: int) -> str:
        with self.sessions() as s:
            c = s.get(Case, cid)
            assert c is not None
            return c.protocol

    def get(self, cid: int) -> Case:
        with self.sessions() as s:
            c = s.get(Case, cid)
            assert c is not None
            return c


@pytest.fixture
def world(sessions: sessionmaker[Session], muni: Municipality) -> World:
    return World(sessions, muni)


def _expected(action: str, actor: str, status: str) -> type[Exception] | None:
    if actor.endswith("_other"):
        # another office's staff cannot even see a case routed to this office
        return NotFound
    if actor not in ("supervisor", "admin") and actor not in ROLES_FOR[action]:
        return Forbidden
    if status not in SOURCES[action]:
        return IllegalTransition
    return None


@pytest.mark.parametrize("status", [s.value for s in Status])
def test_permission_matrix(world: World, status: str) -> None:
    """Every (action, actor) pair from every status: allowed, Forbidden, Illegal or NotFound."""
    cid = world.case_in(status)
    with world.sessions() as s:
        case = s.get(Case, cid)
        assert case is not None
        if case.office is None:  # cases never routed: scope them to the office under test
            case.office = world.office
        for action in STEPS:
            for actor in ACTORS:
                want = _expected(action, actor, status)
                user = world.user(s, actor)
                if want is None:
                    check(user, case, action)
                else:
                    with pytest.raises(want):
                        check(user, case, action)
        s.rollback()


def test_full_life_with_history_and_citizen_texts(world: World) -> None:
    cid = world.new_case()
    world.do(cid, "urp", "assign", {"office": world.office})
    world.do(cid, "referent", "dispatch", {"operator": "operator"})
    world.do(cid, "operator", "take")
    world.do(cid, "operator", "note", {"text": "sopralluogo fatto", "public": False})
    world.do(cid, "operator", "note", {"text": "Intervento programmato per lunedì", "public": True})
    world.do(cid, "operator", "resolve", {"note": "riparato"})
    world.do(cid, "urp", "close", {"reply": "Il guasto è stato riparato. Grazie."})
    case = world.get(cid)
    assert case.status == Status.CLOSED and case.closed_at == T0
    assert [e.action for e in case.events] == [
        "register",
        "assign",
        "dispatch",
        "take",
        "note",
        "note",
        "resolve",
        "close",
    ]
    assert [(e.from_status, e.to_status) for e in case.events][1:4] == [
        ("received", "assigned"),
        ("assigned", "assigned"),
        ("assigned", "in_progress"),
    ]
    assert case.events[3].actor_label == "Operator (operator)"
    assert [e.public for e in case.events[4:6]] == [False, True]
    with world.sessions() as s:
        texts = s.scalars(
            select(OutboxMessage).where(OutboxMessage.case_id == cid).order_by(OutboxMessage.id)
        ).all()
        assert [t.template for t in texts] == [
            "registered",
            "assigned",
            "taken",
            "public_note",
            "closed",
        ]
        assert "Operator" in texts[2].body  # the responsible person is named (L. 241/1990 art. 8)
        assert "lunedì" in texts[3].body and "riparato" in texts[4].body
        assert all(case.protocol in t.body for t in texts)
        kinds = {(n.kind, n.user_id) for n in s.scalars(select(StaffNotification))}
        operator = world.user(s, "operator").id
        assert ("dispatched", operator) in kinds
        assert ("resolved", world.user(s, "urp").id) in kinds


def test_dispatch_only_to_operators_of_the_case_office(world: World) -> None:
    cid = world.case_in("assigned")
    with pytest.raises(Invalid):
        world.do(cid, "referent", "dispatch", {"operator": "operator_other"})
    with pytest.raises(Invalid):
        world.do(cid, "referent", "dispatch", {})
    world.do(cid, "referent", "dispatch", {"operator": "operator2"})
    with pytest.raises(Forbidden):  # dispatched to a colleague: not mine to take
        world.do(cid, "operator", "take")
    assert world.do(cid, "operator2", "take").status == Status.IN_PROGRESS


def test_assign_by_category_routes_and_sets_due_date(world: World) -> None:
    cat = next(c for c in world.muni.categories if c.due_days and c.due_days != world.muni.due_days)
    cid = world.new_case()
    case = world.get(cid)
    assert case.due_at == T0 + timedelta(days=world.muni.due_days)  # L. 241/1990: 30 days
    case = world.do(cid, "urp", "assign", {"category": cat.code})
    assert case.office == cat.office and case.category == cat.code
    assert case.due_at == T0 + timedelta(days=cat.due_days or 0)
    with pytest.raises(Invalid):
        world.do(world.new_case(), "urp", "assign", {"office": "NOPE"})
    with pytest.raises(Invalid):
        world.do(world.new_case(), "urp", "assign", {})


def test_reopen_only_within_the_window(world: World) -> None:
    cid = world.case_in("closed")
    world.now = T0 + timedelta(days=world.muni.reopen_days + 1)
    with pytest.raises(IllegalTransition):
        world.do(cid, "urp", "reopen", {"reason": "il citizen dice che non è risolto"})
    world.now = T0 + timedelta(days=world.muni.reopen_days - 1)
    case = world.do(cid, "urp", "reopen", {"reason": "non risolto"})
    assert case.status == Status.ASSIGNED and case.closed_at is None and case.office == world.office
    with pytest.raises(Invalid):
        world.do(world.case_in("closed"), "urp", "reopen", {})


def test_closing_a_master_closes_its_duplicates_and_tells_each_reporter(world: World) -> None:
    master = world.case_in("in_progress")
    dups = []
    for phone in ("+393401111111", "+393402222222"):
        with transaction(world.sessions) as s:
            dups.append(
                register(
                    s, world.ctx(), confirm=True, channel="sms", phone=phone, text="stessa buca"
                ).case.id
            )
    for d in dups:
        case = world.do(d, "urp", "duplicate", {"of": world.protocol(master)})
        assert case.status == Status.DUPLICATE and case.master_id == master
    world.do(master, "operator", "resolve")
    world.do(master, "urp", "close", {"reply": "Buca chiusa il 3 aprile."})
    master_protocol = world.protocol(master)
    with world.sessions() as s:
        for d in dups:
            dup = s.get(Case, d)
            assert dup is not None and dup.status == Status.CLOSED
            assert dup.events[-1].action == "master_closed"
            last = s.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.case_id == d)
                .order_by(OutboxMessage.id.desc())
            ).first()
            assert last is not None and last.template == "master_closed" and last.phone == dup.phone
            assert master_protocol in last.body


def test_duplicate_needs_an_open_master_other_than_itself(world: World) -> None:
    cid = world.new_case()
    with pytest.raises(Invalid):
        world.do(cid, "urp", "duplicate", {"of": world.protocol(cid)})
    with pytest.raises(IllegalTransition):
        world.do(cid, "urp", "duplicate", {"of": world.protocol(world.case_in("closed"))})
    with pytest.raises(NotFound):
        world.do(cid, "urp", "duplicate", {"of": "2026/0099999"})


def test_side_exits_reply_to_the_citizen(world: World) -> None:
    cid = world.case_in("not_competent")
    case = world.get(cid)
    assert case.status == Status.NOT_COMPETENT and case.closed_at is not None
    with world.sessions() as s:
        msg = s.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.case_id == cid)
            .order_by(OutboxMessage.id.desc())
        ).first()
        assert msg is not None and msg.template == "not_competent" and "Provincia" in msg.body


def test_public_texts_wait_for_the_end_of_quiet_hours(world: World) -> None:
    world.now = datetime(2026, 4, 1, 21, 30, tzinfo=UTC)  # 23:30 in Rome
    cid = world.new_case()
    with world.sessions() as s:
        msg = s.scalars(select(OutboxMessage).where(OutboxMessage.case_id == cid)).one()
        local = msg.not_before.astimezone(world.muni.tz)
        q = world.muni.sms.quiet_hours
        assert (local.hour, local.minute) == (q.end.hour, q.end.minute)
        assert local.date().isoformat() == "2026-04-02"


def test_the_systems_moves_are_checked_against_the_same_table(muni: Municipality) -> None:
    """Registration, routing, a citizen's message, the overdue flag: moves of the one table,
    from its sources to its targets; the staff's API and console never offer them."""
    ctx = Ctx(muni, T0)
    case = prepare_case(ctx, channel="counter", text="segnalazione generica senza parole chiave")
    assert [e.action for e in case.events] == ["register"]  # made through the table
    assert set(STEPS) < set(MOVES) and "register" not in STEPS
    with pytest.raises(IllegalTransition, match="cannot master_closed a case that is received"):
        system_step(None, ctx, case, "master_closed", Outcome(Status.CLOSED))
    with pytest.raises(RuntimeError, match="may not make a case"):
        system_step(None, ctx, case, "citizen_message", Outcome(Status.CLOSED))
    with pytest.raises(RuntimeError, match="not a move of the table"):
        system_step(None, ctx, case, "teleport", Outcome(None))
    system_step(None, ctx, case, "assign", Outcome(Status.ASSIGNED, data={"automatic": True}))
    assert case.status == Status.ASSIGNED
    with pytest.raises(IllegalTransition):  # an open case only
        case.status = Status.CLOSED.value
        system_step(None, ctx, case, "overdue", Outcome(None))


def test_staff_cannot_take_a_systems_move(world: World) -> None:
    case_id = world.new_case()
    with transaction(world.sessions) as s, pytest.raises(NotFound, match="unknown action"):
        case = s.get(Case, case_id)
        assert case is not None
        perform(s, world.ctx(), world.user(s, "supervisor"), case, "register", {})
