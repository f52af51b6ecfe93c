-- email_funnel: one row per email delivery (delivery_id), from every email event table.
-- Times are original_timestamp (Customer.io's event time). Opened = an open or a click (a click implies
-- an open). opens and clicks count events; everything else is per delivery. human_opened: an open that
-- is not prefetched, or a click that is not a machine's; human_clicked: a click that is not a machine's.
-- The schema placeholder is replaced by the source's schema, validated and quoted.
CREATE VIEW {schema}.email_funnel AS
WITH events AS (
    SELECT 'sent' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_sent
    UNION ALL
    SELECT 'delivered' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_delivered
    UNION ALL
    SELECT 'opened' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_opened
    UNION ALL
    SELECT 'clicked' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_link_clicked
    UNION ALL
    SELECT 'bounced' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_bounced
    UNION ALL
    SELECT 'spammed' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_marked_as_spam
    UNION ALL
    SELECT 'unsubscribed' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_unsubscribed
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_drafted
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_attempted
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_failed
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_dropped
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_deferred
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_converted
    UNION ALL
    SELECT 'other' AS kind, delivery_id, user_id, context_traits_email AS email, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id, email_subject, original_timestamp AS event_at, prefetched, machine
    FROM {schema}.email_undeliverable
)
SELECT
    delivery_id,
    MAX(user_id) AS user_id,
    MAX(email) AS email,
    MAX(campaign_id) AS campaign_id,
    MAX(broadcast_id) AS broadcast_id,
    MAX(newsletter_id) AS newsletter_id,
    MAX(transactional_message_id) AS transactional_message_id,
    MAX(action_id) AS action_id,
    MAX(email_subject) AS email_subject,
    MIN(event_at) AS first_event_at,
    MIN(CASE WHEN kind = 'sent' THEN event_at END) AS first_sent_at,
    MIN(CASE WHEN kind = 'delivered' THEN event_at END) AS first_delivered_at,
    MIN(CASE WHEN kind IN ('opened', 'clicked') THEN event_at END) AS first_opened_at,
    MIN(CASE WHEN kind = 'clicked' THEN event_at END) AS first_clicked_at,
    COUNT(CASE WHEN kind = 'sent' THEN 1 END) > 0 AS is_sent,
    COUNT(CASE WHEN kind = 'delivered' THEN 1 END) > 0 AS is_delivered,
    COUNT(CASE WHEN kind IN ('opened', 'clicked') THEN 1 END) > 0 AS is_opened,
    COUNT(CASE WHEN kind = 'clicked' THEN 1 END) > 0 AS is_clicked,
    COUNT(CASE WHEN kind = 'bounced' THEN 1 END) > 0 AS is_bounced,
    COUNT(CASE WHEN kind = 'spammed' THEN 1 END) > 0 AS is_spammed,
    COUNT(CASE WHEN kind = 'unsubscribed' THEN 1 END) > 0 AS is_unsubscribed,
    COUNT(CASE WHEN kind = 'opened' THEN 1 END) AS opens,
    COUNT(CASE WHEN kind = 'clicked' THEN 1 END) AS clicks,
    COUNT(CASE WHEN (kind = 'opened' AND prefetched IS NOT TRUE)
                 OR (kind = 'clicked' AND machine IS NOT TRUE) THEN 1 END) > 0 AS human_opened,
    COUNT(CASE WHEN kind = 'clicked' AND machine IS NOT TRUE THEN 1 END) > 0 AS human_clicked
FROM events
WHERE delivery_id IS NOT NULL
GROUP BY delivery_id
