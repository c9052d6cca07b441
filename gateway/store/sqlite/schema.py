"""The SQLite schema as numbered migrations; ``PRAGMA user_version`` records the last applied."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: contacts, companies, memberships, tickets and their conversations
    """
    CREATE TABLE companies (
        id INTEGER PRIMARY KEY,
        company_id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        plan TEXT,
        size INTEGER,
        monthly_spend REAL,
        custom_attributes TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE contacts (
        id INTEGER PRIMARY KEY,
        user_id TEXT UNIQUE,
        email TEXT,
        name TEXT,
        custom_attributes TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE memberships (
        contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
        company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
        PRIMARY KEY (contact_id, company_id)
    ) WITHOUT ROWID;
    CREATE INDEX memberships_by_company ON memberships(company_id);
    CREATE TABLE ticket_types (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE ticket_states (
        id INTEGER PRIMARY KEY,
        category TEXT NOT NULL CHECK (category IN ('submitted', 'in_progress', 'waiting_on_customer', 'resolved')),
        internal_label TEXT NOT NULL,
        external_label TEXT NOT NULL
    );
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY,
        ticket_id TEXT NOT NULL UNIQUE,
        type_id INTEGER NOT NULL REFERENCES ticket_types(id),
        state_id INTEGER NOT NULL REFERENCES ticket_states(id),
        category TEXT NOT NULL CHECK (category IN ('Customer', 'Back-office', 'Tracker')),
        is_shared INTEGER NOT NULL DEFAULT 0,
        company_id INTEGER REFERENCES companies(id),
        creator_id INTEGER NOT NULL REFERENCES contacts(id),
        title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        conversation_id INTEGER NOT NULL UNIQUE
    );
    CREATE INDEX tickets_by_company ON tickets(company_id, updated_at);
    CREATE INDEX tickets_by_creator ON tickets(creator_id, updated_at);
    CREATE TABLE conversation_parts (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL,
        author_contact_id INTEGER REFERENCES contacts(id),
        author_name TEXT NOT NULL,
        body TEXT NOT NULL,
        is_public INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX parts_by_conversation ON conversation_parts(conversation_id, created_at);
    CREATE TABLE participants (
        conversation_id INTEGER NOT NULL,
        contact_id INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
        PRIMARY KEY (conversation_id, contact_id)
    ) WITHOUT ROWID;
    CREATE INDEX participants_by_contact ON participants(contact_id);
    """,
    # 2: ticket search. One FTS5 row per ticket (rowid = tickets.id): title, description, ticket id and its
    # public replies joined by char(30), oldest first. SECURITY: only parts with is_public = 1 (exactly what
    # the detail page shows) are ever indexed; internal notes never reach the index, and a part made internal
    # leaves it. Every stored text has chars 2, 3, 4 and 30 blanked: they are the snippet markers, the cut
    # mark and the reply separator (gateway/store/search.py), so no text can forge them.
    """
    -- What visible_clause() reads, so the visible set of a search (or a count) comes from an index alone.
    CREATE INDEX tickets_by_visibility ON tickets(company_id, category, is_shared, creator_id);

    -- Prefix indexes for 2- and 3-character prefixes: the search matches every word as a prefix.
    CREATE VIRTUAL TABLE ticket_search USING fts5(
        title, description, ticket_id, replies,
        tokenize = 'unicode61 remove_diacritics 2',
        prefix = '2 3'
    );
    CREATE VIEW ticket_search_source (id, title, description, ticket_id, replies) AS
    SELECT
        t.id,
        replace(replace(replace(replace(t.title, char(2), ' '), char(3), ' '), char(4), ' '), char(30), ' '),
        replace(replace(replace(replace(t.description, char(2), ' '), char(3), ' '), char(4), ' '), char(30), ' '),
        replace(replace(replace(replace(t.ticket_id, char(2), ' '), char(3), ' '), char(4), ' '), char(30), ' '),
        (
            SELECT group_concat(body, char(30)) FROM (
                SELECT replace(replace(replace(replace(p.body, char(2), ' '), char(3), ' '), char(4), ' '),
                    char(30), ' ') AS body
                FROM conversation_parts p
                WHERE p.conversation_id = t.conversation_id AND p.is_public = 1
                ORDER BY p.created_at, p.id
            )
        )
    FROM tickets t;

    INSERT INTO ticket_search (rowid, title, description, ticket_id, replies)
    SELECT id, title, description, ticket_id, replies FROM ticket_search_source;

    CREATE TRIGGER ticket_search_after_ticket_insert AFTER INSERT ON tickets BEGIN
        INSERT INTO ticket_search (rowid, title, description, ticket_id, replies)
        SELECT id, title, description, ticket_id, replies FROM ticket_search_source WHERE id = new.id;
    END;
    CREATE TRIGGER ticket_search_after_ticket_update
    AFTER UPDATE OF id, ticket_id, title, description, conversation_id ON tickets BEGIN
        DELETE FROM ticket_search WHERE rowid = old.id;
        INSERT INTO ticket_search (rowid, title, description, ticket_id, replies)
        SELECT id, title, description, ticket_id, replies FROM ticket_search_source WHERE id = new.id;
    END;
    CREATE TRIGGER ticket_search_after_ticket_delete AFTER DELETE ON tickets BEGIN
        DELETE FROM ticket_search WHERE rowid = old.id;
    END;

    CREATE TRIGGER ticket_search_after_part_insert AFTER INSERT ON conversation_parts
    WHEN new.is_public = 1 BEGIN
        UPDATE ticket_search SET replies = (
            SELECT replies FROM ticket_search_source WHERE id = ticket_search.rowid
        ) WHERE rowid = (SELECT id FROM tickets WHERE conversation_id = new.conversation_id);
    END;
    CREATE TRIGGER ticket_search_after_part_update
    AFTER UPDATE OF conversation_id, body, is_public, created_at ON conversation_parts
    WHEN old.is_public = 1 OR new.is_public = 1 BEGIN
        UPDATE ticket_search SET replies = (
            SELECT replies FROM ticket_search_source WHERE id = ticket_search.rowid
        ) WHERE rowid IN (
            SELECT id FROM tickets WHERE conversation_id IN (old.conversation_id, new.conversation_id)
        );
    END;
    CREATE TRIGGER ticket_search_after_part_delete AFTER DELETE ON conversation_parts
    WHEN old.is_public = 1 BEGIN
        UPDATE ticket_search SET replies = (
            SELECT replies FROM ticket_search_source WHERE id = ticket_search.rowid
        ) WHERE rowid = (SELECT id FROM tickets WHERE conversation_id = old.conversation_id);
    END;
    """,
    # 3: the visibility scope (company, or minus the creator for company-less tickets) with what the
    # list needs to filter and sort by update, so a page of a 20,000-ticket company reads the index only.
    """
    CREATE INDEX tickets_by_scope ON tickets(
        coalesce(company_id, -creator_id), updated_at, category, is_shared, creator_id, type_id, state_id
    );
    """,
    # 4: the Intercom connector: each record's Intercom id (webhooks and deletions name records by it), a
    # ticket's linked Intercom conversation (joins go there), the sync's checkpoints and its one lease.
    """
    ALTER TABLE companies ADD COLUMN remote_id TEXT;
    CREATE UNIQUE INDEX companies_by_remote_id ON companies(remote_id);
    ALTER TABLE contacts ADD COLUMN remote_id TEXT;
    CREATE UNIQUE INDEX contacts_by_remote_id ON contacts(remote_id);
    ALTER TABLE tickets ADD COLUMN remote_id TEXT;
    ALTER TABLE tickets ADD COLUMN remote_conversation TEXT;
    CREATE UNIQUE INDEX tickets_by_remote_id ON tickets(remote_id);
    CREATE TABLE sync_checkpoints (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at REAL NOT NULL);
    """,
    # 5: the change feed (gateway/store/feed.py). Triggers write it, so every writer (the admin API, import,
    # the seed, another process) records its changes in its own transaction, and none can forget to. A change
    # names a ticket and what happened to it, never any text: SECURITY: an internal note records nothing (it
    # only moves updated_at, which alone records nothing), and "access" changes (a contact's memberships or
    # attributes, any company's) only make streams check their visitor's access again. change_feed holds
    # how many changes are kept (set by every opener from store.change_retention) and the newest id dropped,
    # so a reader resuming from before it knows it missed some.
    """
    CREATE TABLE changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'state', 'reply', 'access')),
        ticket_id TEXT,
        contact_id INTEGER
    );
    CREATE TABLE change_feed (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        retained INTEGER NOT NULL,
        dropped_through INTEGER NOT NULL
    );
    INSERT INTO change_feed (one, retained, dropped_through) VALUES (1, 10000, 0);

    CREATE TRIGGER changes_retained AFTER INSERT ON changes BEGIN
        UPDATE change_feed SET dropped_through = max(dropped_through, new.id - retained);
        DELETE FROM changes WHERE id <= (SELECT dropped_through FROM change_feed);
    END;

    CREATE TRIGGER changes_ticket_created AFTER INSERT ON tickets BEGIN
        INSERT INTO changes (kind, ticket_id) VALUES ('created', new.ticket_id);
    END;
    CREATE TRIGGER changes_ticket_state AFTER UPDATE OF state_id ON tickets
    WHEN old.state_id IS NOT new.state_id BEGIN
        INSERT INTO changes (kind, ticket_id) VALUES ('state', new.ticket_id);
    END;
    CREATE TRIGGER changes_ticket_updated AFTER UPDATE ON tickets
    WHEN old.ticket_id IS NOT new.ticket_id OR old.title IS NOT new.title OR old.description IS NOT new.description
        OR old.type_id IS NOT new.type_id OR old.category IS NOT new.category OR old.is_shared IS NOT new.is_shared
        OR old.company_id IS NOT new.company_id OR old.creator_id IS NOT new.creator_id BEGIN
        INSERT INTO changes (kind, ticket_id) VALUES ('updated', new.ticket_id);
    END;
    CREATE TRIGGER changes_reply_added AFTER INSERT ON conversation_parts WHEN new.is_public = 1 BEGIN
        INSERT INTO changes (kind, ticket_id)
        SELECT 'reply', ticket_id FROM tickets WHERE conversation_id = new.conversation_id;
    END;
    CREATE TRIGGER changes_reply_published AFTER UPDATE OF is_public ON conversation_parts
    WHEN old.is_public = 0 AND new.is_public = 1 BEGIN
        INSERT INTO changes (kind, ticket_id)
        SELECT 'reply', ticket_id FROM tickets WHERE conversation_id = new.conversation_id;
    END;

    CREATE TRIGGER changes_membership_added AFTER INSERT ON memberships BEGIN
        INSERT INTO changes (kind, contact_id) VALUES ('access', new.contact_id);
    END;
    CREATE TRIGGER changes_membership_removed AFTER DELETE ON memberships BEGIN
        INSERT INTO changes (kind, contact_id) VALUES ('access', old.contact_id);
    END;
    CREATE TRIGGER changes_contact_updated AFTER UPDATE ON contacts
    WHEN old.user_id IS NOT new.user_id OR old.email IS NOT new.email OR old.name IS NOT new.name
        OR old.custom_attributes IS NOT new.custom_attributes BEGIN
        INSERT INTO changes (kind, contact_id) VALUES ('access', new.id);
    END;
    -- A company's attributes feed the access rules of all its members: every stream checks again.
    CREATE TRIGGER changes_company_updated AFTER UPDATE ON companies
    WHEN old.name IS NOT new.name OR old.plan IS NOT new.plan OR old.size IS NOT new.size
        OR old.monthly_spend IS NOT new.monthly_spend OR old.custom_attributes IS NOT new.custom_attributes BEGIN
        INSERT INTO changes (kind) VALUES ('access');
    END;
    """,
    # 6: what the list reads at a million tickets. ticket_scope_counts holds, per scope key (company, or minus
    # the creator) and creator, how many tickets a visitor may see there: the categories visible_clause()
    # shows (SECURITY: the same condition as its, so the total never counts a Tracker or unshared
    # Back-office ticket), kept by triggers in each write's own transaction; the list's total and its creator
    # filter read it instead of every visible ticket. tickets_by_scope_update orders each key's tickets by
    # (updated_at, id), the list's own order, so a page stops after its rows.
    """
    CREATE TABLE ticket_scope_counts (
        scope INTEGER NOT NULL,
        creator_id INTEGER NOT NULL,
        type_id INTEGER NOT NULL,
        tickets INTEGER NOT NULL,
        PRIMARY KEY (scope, creator_id, type_id)
    ) WITHOUT ROWID;
    INSERT INTO ticket_scope_counts (scope, creator_id, type_id, tickets)
    SELECT coalesce(company_id, -creator_id), creator_id, type_id, count(*) FROM tickets
    WHERE category = 'Customer' OR (category = 'Back-office' AND is_shared = 1) GROUP BY 1, 2, 3;

    CREATE TRIGGER scope_counts_after_ticket_insert AFTER INSERT ON tickets
    WHEN new.category = 'Customer' OR (new.category = 'Back-office' AND new.is_shared = 1) BEGIN
        INSERT INTO ticket_scope_counts (scope, creator_id, type_id, tickets)
        VALUES (coalesce(new.company_id, -new.creator_id), new.creator_id, new.type_id, 1)
        ON CONFLICT (scope, creator_id, type_id) DO UPDATE SET tickets = tickets + 1;
    END;
    CREATE TRIGGER scope_counts_after_ticket_update AFTER UPDATE OF company_id, creator_id, type_id, category,
    is_shared ON tickets BEGIN
        UPDATE ticket_scope_counts SET tickets = tickets - 1
        WHERE scope = coalesce(old.company_id, -old.creator_id)
            AND creator_id = old.creator_id AND type_id = old.type_id
            AND (old.category = 'Customer' OR (old.category = 'Back-office' AND old.is_shared = 1));
        INSERT INTO ticket_scope_counts (scope, creator_id, type_id, tickets)
        SELECT coalesce(new.company_id, -new.creator_id), new.creator_id, new.type_id, 1
        WHERE new.category = 'Customer' OR (new.category = 'Back-office' AND new.is_shared = 1)
        ON CONFLICT (scope, creator_id, type_id) DO UPDATE SET tickets = tickets + 1;
    END;
    CREATE TRIGGER scope_counts_after_ticket_delete AFTER DELETE ON tickets
    WHEN old.category = 'Customer' OR (old.category = 'Back-office' AND old.is_shared = 1) BEGIN
        UPDATE ticket_scope_counts SET tickets = tickets - 1
        WHERE scope = coalesce(old.company_id, -old.creator_id)
            AND creator_id = old.creator_id AND type_id = old.type_id;
    END;

    DROP INDEX tickets_by_scope;
    CREATE INDEX tickets_by_scope_update ON tickets(
        coalesce(company_id, -creator_id), updated_at, id, category, is_shared, creator_id, type_id, state_id
    );
    """,
    # 7: search by scope. ticket_search gains a fifth column, scope: the ticket's scope key as one token ('k1'
    # for company 1, 'kn7' for contact 7's company-less tickets; visibility.fts_scope() writes the same), and
    # none for a ticket no visitor may see (visible_clause()'s categories). A search asks FTS5 for the
    # visitor's keys AND their words, so FTS5 intersects the two doclists itself instead of every company's
    # matches being probed against the visitor's tickets. SECURITY: only ever a narrowing (a search still
    # tests visible_clause() on each row); a visitor's words match the four text columns only (fts_query()).
    """
    DROP TRIGGER ticket_search_after_ticket_insert;
    DROP TRIGGER ticket_search_after_ticket_update;
    DROP VIEW ticket_search_source;
    DROP TABLE ticket_search;
    CREATE VIRTUAL TABLE ticket_search USING fts5(
        title, description, ticket_id, replies, scope,
        tokenize = 'unicode61 remove_diacritics 2',
        prefix = '2 3'
    );
    CREATE VIEW ticket_search_source (id, title, description, ticket_id, replies, scope) AS
    SELECT
        t.id,
        replace(replace(replace(replace(t.title, char(2), ' '), char(3), ' '), char(4), ' '), char(30), ' '),
        replace(replace(replace(replace(t.description, char(2), ' '), char(3), ' '), char(4), ' '), char(30), ' '),
        replace(replace(replace(replace(t.ticket_id, char(2), ' '), char(3), ' '), char(4), ' '), char(30), ' '),
        (
            SELECT group_concat(body, char(30)) FROM (
                SELECT replace(replace(replace(replace(p.body, char(2), ' '), char(3), ' '), char(4), ' '),
                    char(30), ' ') AS body
                FROM conversation_parts p
                WHERE p.conversation_id = t.conversation_id AND p.is_public = 1
                ORDER BY p.created_at, p.id
            )
        ),
        CASE WHEN t.category = 'Customer' OR (t.category = 'Back-office' AND t.is_shared = 1)
            THEN 'k' || replace(CAST(coalesce(t.company_id, -t.creator_id) AS TEXT), '-', 'n') END
    FROM tickets t;

    INSERT INTO ticket_search (rowid, title, description, ticket_id, replies, scope)
    SELECT id, title, description, ticket_id, replies, scope FROM ticket_search_source;

    CREATE TRIGGER ticket_search_after_ticket_insert AFTER INSERT ON tickets BEGIN
        INSERT INTO ticket_search (rowid, title, description, ticket_id, replies, scope)
        SELECT id, title, description, ticket_id, replies, scope FROM ticket_search_source WHERE id = new.id;
    END;
    CREATE TRIGGER ticket_search_after_ticket_update
    AFTER UPDATE OF id, ticket_id, title, description, conversation_id, company_id, creator_id, category, is_shared
    ON tickets BEGIN
        DELETE FROM ticket_search WHERE rowid = old.id;
        INSERT INTO ticket_search (rowid, title, description, ticket_id, replies, scope)
        SELECT id, title, description, ticket_id, replies, scope FROM ticket_search_source WHERE id = new.id;
    END;
    """,
    # 8: a ticket the Intercom sync forgot records a "removed" change (gateway/store/mirror.py's forget) with the
    # scope key it had in scope and its creator in contact_id: once it is gone, only the change can say who saw
    # it. SQLite cannot change a CHECK, so the table is made again with its rows and its counter (the feed's
    # newest id); legacy_alter_table leaves the other tables' triggers, which name "changes", as they are.
    """
    PRAGMA legacy_alter_table = ON;
    CREATE TABLE changes_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'state', 'reply', 'removed', 'access')),
        ticket_id TEXT,
        contact_id INTEGER,
        scope INTEGER
    );
    INSERT INTO changes_new (id, kind, ticket_id, contact_id) SELECT id, kind, ticket_id, contact_id FROM changes;
    DELETE FROM sqlite_sequence WHERE name = 'changes_new';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'changes_new', seq FROM sqlite_sequence WHERE name = 'changes';
    DROP TABLE changes;
    ALTER TABLE changes_new RENAME TO changes;
    CREATE TRIGGER changes_retained AFTER INSERT ON changes BEGIN
        UPDATE change_feed SET dropped_through = max(dropped_through, new.id - retained);
        DELETE FROM changes WHERE id <= (SELECT dropped_through FROM change_feed);
    END;
    PRAGMA legacy_alter_table = OFF;
    """,
)


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations not yet applied, each in its own transaction; return the schema version."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise RuntimeError(f"the store's schema version {version} is newer than this gateway ({len(MIGRATIONS)})")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
