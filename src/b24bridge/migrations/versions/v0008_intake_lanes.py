"""The door and the lanes: runs carry the key they were accepted under, jobs are taken fairly across portals.

* ``runs.intake_key``: each accepted call's own key, given before its first attempt to store it. A call whose
  commit went unanswered (the database vanished mid-commit) is written to the local spool under the same key, so
  draining it later stores it once whether or not that commit landed.
* ``b24bridge_fetch_job``: what a worker takes next. Each portal's jobs are a lane (procrastinate's ``queue_name``,
  ``p:<portal key>``); a lane with ``lane_slots`` jobs running gets no more, and of the lanes that may, the one with
  the fewest running jobs goes first (then the one waiting longest). A portal with thousands of jobs waiting for its
  limits therefore never holds more slots than they can use, and a quiet portal's job is the next one taken.
  Within a lane the rules are procrastinate's own (``procrastinate_fetch_job_v2``): a job whose lock is held, or
  that an earlier job of its lock precedes, waits; jobs scheduled for later wait; the oldest goes first. b24bridge
  sets no job priorities, so a lane is taken in id order.
* ``b24bridge_fetch_jobs``: the same, several jobs in one call, round robin across the lanes (one from each per
  round): procrastinate's worker takes jobs one query at a time, and with its event loop busy that loop started only
  ~50 jobs a second.
* ``b24bridge_portals`` notifications: every change to a portal's row names its member_id, so every process's
  in-memory directory of application tokens (the robot calls' and events' proof of origin) is current within
  milliseconds of an install, an update or an uninstall, without asking the database per call.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

FETCH = """
CREATE FUNCTION b24bridge_fetch_job(target_queue_names character varying[], p_worker_id bigint, lane_slots integer)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
    lane record;
    found_job procrastinate_jobs;
BEGIN
    FOR lane IN
        -- The lanes with waiting jobs, one index probe each (a loose index scan), with their oldest job.
        WITH RECURSIVE lanes(queue_name) AS (
            (SELECT queue_name FROM procrastinate_jobs WHERE status = 'todo' ORDER BY queue_name LIMIT 1)
            UNION ALL
            SELECT (SELECT j.queue_name FROM procrastinate_jobs j
                     WHERE j.status = 'todo' AND j.queue_name > lanes.queue_name
                     ORDER BY j.queue_name LIMIT 1)
              FROM lanes WHERE lanes.queue_name IS NOT NULL
        ),
        running AS (
            SELECT queue_name, count(*) AS n FROM procrastinate_jobs WHERE status = 'doing' GROUP BY queue_name
        )
        SELECT lanes.queue_name,
               coalesce(running.n, 0) AS n,
               (SELECT min(j.id) FROM procrastinate_jobs j
                 WHERE j.status = 'todo' AND j.queue_name = lanes.queue_name) AS oldest
          FROM lanes LEFT JOIN running ON running.queue_name = lanes.queue_name
         WHERE lanes.queue_name IS NOT NULL
           AND (target_queue_names IS NULL OR lanes.queue_name = ANY(target_queue_names))
           AND coalesce(running.n, 0) < lane_slots
         ORDER BY n, oldest
    LOOP
        WITH candidate AS (
            SELECT jobs.id
              FROM procrastinate_jobs AS jobs
             WHERE jobs.queue_name = lane.queue_name
               AND jobs.status = 'todo'
               AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
               AND NOT EXISTS (
                   SELECT 1 FROM procrastinate_jobs AS other_jobs
                    WHERE jobs.lock IS NOT NULL
                      AND other_jobs.lock = jobs.lock
                      AND (other_jobs.status = 'doing'
                           OR (other_jobs.status = 'todo'
                               AND (other_jobs.priority > jobs.priority
                                    OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id))))
               )
             ORDER BY jobs.id
             LIMIT 1
             FOR UPDATE OF jobs SKIP LOCKED
        )
        UPDATE procrastinate_jobs
           SET status = 'doing', worker_id = p_worker_id
          FROM candidate
         WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_job;
        IF found_job.id IS NOT NULL THEN
            RETURN found_job;
        END IF;
    END LOOP;
    RETURN found_job;
END;
$$;
"""


FETCH_MANY = """
CREATE FUNCTION b24bridge_fetch_jobs(
    target_queue_names character varying[], p_worker_id bigint, lane_slots integer, max_jobs integer
)
    RETURNS SETOF procrastinate_jobs
    LANGUAGE plpgsql
AS $$
DECLARE
    names character varying[];
    running integer[];
    taken integer := 0;
    progress boolean := true;
    found_job procrastinate_jobs;
BEGIN
    -- The lanes in b24bridge_fetch_job's order, then round after round one job from each lane that may run more.
    WITH RECURSIVE lanes(queue_name) AS (
        (SELECT queue_name FROM procrastinate_jobs WHERE status = 'todo' ORDER BY queue_name LIMIT 1)
        UNION ALL
        SELECT (SELECT j.queue_name FROM procrastinate_jobs j
                 WHERE j.status = 'todo' AND j.queue_name > lanes.queue_name
                 ORDER BY j.queue_name LIMIT 1)
          FROM lanes WHERE lanes.queue_name IS NOT NULL
    ),
    doing AS (
        SELECT queue_name, count(*) AS n FROM procrastinate_jobs WHERE status = 'doing' GROUP BY queue_name
    ),
    ordered AS (
        SELECT lanes.queue_name, coalesce(doing.n, 0)::integer AS n,
               (SELECT min(j.id) FROM procrastinate_jobs j
                 WHERE j.status = 'todo' AND j.queue_name = lanes.queue_name) AS oldest
          FROM lanes LEFT JOIN doing ON doing.queue_name = lanes.queue_name
         WHERE lanes.queue_name IS NOT NULL
           AND (target_queue_names IS NULL OR lanes.queue_name = ANY(target_queue_names))
           AND coalesce(doing.n, 0) < lane_slots
    )
    SELECT array_agg(queue_name ORDER BY n, oldest), array_agg(n ORDER BY n, oldest) INTO names, running FROM ordered;
    WHILE progress AND taken < max_jobs AND names IS NOT NULL LOOP
        progress := false;
        FOR i IN 1 .. array_length(names, 1) LOOP
            EXIT WHEN taken >= max_jobs;
            CONTINUE WHEN running[i] >= lane_slots;
            found_job := NULL;
            WITH candidate AS (
                SELECT jobs.id
                  FROM procrastinate_jobs AS jobs
                 WHERE jobs.queue_name = names[i]
                   AND jobs.status = 'todo'
                   AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
                   AND NOT EXISTS (
                       SELECT 1 FROM procrastinate_jobs AS other_jobs
                        WHERE jobs.lock IS NOT NULL
                          AND other_jobs.lock = jobs.lock
                          AND (other_jobs.status = 'doing'
                               OR (other_jobs.status = 'todo'
                                   AND (other_jobs.priority > jobs.priority
                                        OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id))))
                   )
                 ORDER BY jobs.id
                 LIMIT 1
                 FOR UPDATE OF jobs SKIP LOCKED
            )
            UPDATE procrastinate_jobs
               SET status = 'doing', worker_id = p_worker_id
              FROM candidate
             WHERE procrastinate_jobs.id = candidate.id
            RETURNING procrastinate_jobs.* INTO found_job;
            IF found_job.id IS NOT NULL THEN
                RETURN NEXT found_job;
                running[i] := running[i] + 1;
                taken := taken + 1;
                progress := true;
            ELSE
                running[i] := lane_slots;  -- nothing more to take from this lane now
            END IF;
        END LOOP;
    END LOOP;
    RETURN;
END;
$$;
"""


NOTIFY = """
CREATE FUNCTION b24bridge_portal_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('b24bridge_portals', COALESCE(NEW.member_id, OLD.member_id));
    RETURN NULL;
END;
$$;
CREATE TRIGGER b24bridge_portal_changed AFTER INSERT OR UPDATE OR DELETE ON portals
    FOR EACH ROW EXECUTE FUNCTION b24bridge_portal_changed();
"""


def upgrade() -> None:
    op.execute("ALTER TABLE runs ADD COLUMN intake_key text")
    op.execute("CREATE UNIQUE INDEX runs_intake_key ON runs (intake_key) WHERE intake_key IS NOT NULL")
    # The lanes' waiting jobs in order, and their running ones counted, without reading the whole table.
    op.execute("CREATE INDEX b24bridge_jobs_todo_lane ON procrastinate_jobs (queue_name, id) WHERE status = 'todo'")
    op.execute("CREATE INDEX b24bridge_jobs_doing_lane ON procrastinate_jobs (queue_name) WHERE status = 'doing'")
    op.execute(FETCH)
    op.execute(FETCH_MANY)
    op.execute(NOTIFY)


def downgrade() -> None:
    op.execute("DROP TRIGGER b24bridge_portal_changed ON portals")
    op.execute("DROP FUNCTION b24bridge_portal_changed()")
    op.execute("DROP FUNCTION b24bridge_fetch_jobs(character varying[], bigint, integer, integer)")
    op.execute("DROP FUNCTION b24bridge_fetch_job(character varying[], bigint, integer)")
    op.execute("DROP INDEX b24bridge_jobs_doing_lane")
    op.execute("DROP INDEX b24bridge_jobs_todo_lane")
    op.execute("DROP INDEX runs_intake_key")
    op.execute("ALTER TABLE runs DROP COLUMN intake_key")
