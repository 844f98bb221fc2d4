-- Languages (issue 17): the language of each item that can be alerted, a primary
-- subtag such as 'es' (detected from its text, or as its feed declares it); NULL when
-- unknown or for old news.
ALTER TABLE items ADD COLUMN lang TEXT;
-- Whether a search also finds its terms' translations in items of other languages
-- (the sets of languages/synonyms.toml and `[languages] synonyms`).
ALTER TABLE subscriptions ADD COLUMN crosses_languages INTEGER NOT NULL DEFAULT 0;
-- The language of a subscriber's digests and pages (a locale of locales/), chosen on the
-- sign-up page (from the browser's Accept-Language) or the manage page.
ALTER TABLE subscribers ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';
ALTER TABLE signups ADD COLUMN locale TEXT NOT NULL DEFAULT 'en';
