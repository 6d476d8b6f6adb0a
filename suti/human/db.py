"""Storage for human studies: SQLAlchemy models and the engine (SQLite with WAL, or PostgreSQL by URL).

    db = Database.open("study.db")                     # a path means SQLite; or a URL:
    db = Database.open("postgresql://user@host/dbname")
    with db.write() as s: ...                          # one transaction (SQLite: BEGIN IMMEDIATE)
    with db.read() as s: ...

A study is self-contained in the database: every image is re-encoded as PNG (which also strips any
metadata that could name a system) and stored once, keyed by its SHA-256. Uniqueness that the
rating protocol relies on is enforced by the database, not by the application:
one rating per assignment, one rating per client submission id.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
)  # fmt: skip
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from suti.errors import ConfigError, InputError

SQLITE_BUSY_TIMEOUT_MS = 30_000


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    mode: Mapped[str] = mapped_column(String(16))  # "absolute" | "pairwise"
    systems: Mapped[list] = mapped_column(JSON)
    config: Mapped[dict] = mapped_column(JSON)  # the StudyConfig it was made with, plus its source
    admin_token_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex; the token itself is never stored
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Asset(Base):
    __tablename__ = "assets"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class Item(Base):
    """One (demos, prompt) case; gold items are attention checks made at study creation."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("study_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    key: Mapped[str] = mapped_column(String(200))  # item_id from the EVAL_DIR, or gold-NNN
    subject: Mapped[str] = mapped_column(String(200))
    skill: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text)
    demos: Mapped[list] = mapped_column(JSON)  # asset sha256 list
    gold_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Task(Base):
    """What one page shows: one output (absolute mode) or two (pairwise mode) for an item."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    system: Mapped[str] = mapped_column(String(200))
    asset: Mapped[str] = mapped_column(ForeignKey("assets.sha256"))
    system_b: Mapped[str | None] = mapped_column(String(200), nullable=True)
    asset_b: Mapped[str | None] = mapped_column(ForeignKey("assets.sha256"), nullable=True)
    expected: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # gold: the answers that pass


class Rater(Base):
    __tablename__ = "raters"
    __table_args__ = (UniqueConstraint("study_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token: Mapped[str] = mapped_column(String(64), unique=True)


class Assignment(Base):
    """Task `task_id` is page `position` of a rater's own randomised queue; `ref` is its public id."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("rater_id", "position"), UniqueConstraint("rater_id", "task_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(32), unique=True)
    swap: Mapped[bool] = mapped_column(Boolean, default=False)  # pairwise: system_b is shown as "A"


class Rating(Base):
    """One answer. Audit columns: who (rater_id), when (created_at), how long (duration_ms)."""

    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"), index=True)
    submission_id: Mapped[str] = mapped_column(String(64), unique=True)  # the client's idempotency key
    subject: Mapped[float | None] = mapped_column(Float, nullable=True)
    text: Mapped[float | None] = mapped_column(Float, nullable=True)
    realism: Mapped[float | None] = mapped_column(Float, nullable=True)
    choice: Mapped[str | None] = mapped_column(String(16), nullable=True)  # as shown: A, B, tie, both_bad
    preferred: Mapped[str | None] = mapped_column(String(200), nullable=True)  # resolved: a system, tie, both_bad
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    duration_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)  # time on the page, from the client
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)


def database_url(text: str | os.PathLike) -> str:
    """A filesystem path becomes an SQLite URL; `postgresql://` selects the psycopg (v3) driver."""
    text = os.fspath(text)
    if not text.strip():
        raise ConfigError("database is empty: give a file path (SQLite) or a URL like postgresql://user@host/db")
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    try:
        url = make_url(text)
    except ArgumentError as e:
        raise ConfigError(f"cannot parse database URL {text!r}: {e}") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"database must be SQLite or PostgreSQL, got {url.get_backend_name()!r}")
    return url.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" hook below issues BEGIN itself
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a committed rating survives a power cut, not only a kill
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn) -> None:
    # Writers take the lock up front: a deferred transaction that reads and then writes can fail with
    # SQLITE_BUSY_SNAPSHOT under WAL instead of waiting for busy_timeout.
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """An engine plus read and write sessions; `open` creates the tables if they are missing."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        writer = engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(writer, expire_on_commit=False)

    @classmethod
    def open(cls, target: str | os.PathLike, create: bool = True) -> Database:
        url = database_url(target)
        if url.startswith("sqlite"):
            path = make_url(url).database
            if path and path != ":memory:" and not Path(path).parent.is_dir():
                raise InputError(f"folder for the SQLite database does not exist: {Path(path).parent}")
            if path and path != ":memory:" and not create and not Path(path).is_file():
                raise InputError(f"SQLite database {path} does not exist")
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                   pool_size=8, max_overflow=24)  # fmt: skip
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_size=8, max_overflow=24, pool_pre_ping=True)
        db = cls(engine)
        try:
            if create:
                Base.metadata.create_all(engine)
            with engine.connect() as conn:
                missing = [t for t in Base.metadata.tables if not inspect(conn).has_table(t)]
        except (SQLAlchemyError, OSError) as e:  # unreachable server, bad credentials, unreadable file
            engine.dispose()
            raise ConfigError(f"cannot open database {make_url(url).render_as_string()}: {e}") from None
        if missing:
            engine.dispose()
            raise InputError(
                f"database {make_url(url).render_as_string()} holds no study tables "
                f"({', '.join(missing)}); run `suti eval human create` first"
            )
        return db

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._write.begin() as session:
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def find_study(session: Session, name: str | None) -> Study:
    """The named study, or the only one in the database."""
    if name:
        study = session.scalar(select(Study).where(Study.name == name))
        if study is None:
            known = ", ".join(session.scalars(select(Study.name))) or "none"
            raise InputError(f"no study named {name!r} in the database (studies: {known})")
        return study
    studies = list(session.scalars(select(Study)))
    if len(studies) != 1:
        names = ", ".join(s.name for s in studies) or "none"
        raise InputError(f"the database holds {len(studies)} studies ({names}); choose one with --study")
    return studies[0]


def table_counts(session: Session, study_id: int) -> dict[str, int]:
    """Row counts of one study's tables (used to show that rejected input changed nothing)."""
    from sqlalchemy import func

    counts = {}
    for name, model in (("items", Item), ("tasks", Task), ("raters", Rater)):
        counts[name] = session.scalar(select(func.count()).select_from(model).where(model.study_id == study_id))
    own = select(Rater.id).where(Rater.study_id == study_id)
    counts["assignments"] = session.scalar(
        select(func.count()).select_from(Assignment).where(Assignment.rater_id.in_(own))
    )
    counts["ratings"] = session.scalar(select(func.count()).select_from(Rating).where(Rating.rater_id.in_(own)))
    return counts
