-- message_funnel: one row per delivery of every channel (channel, delivery_id), SPEC §8.
-- Times are original_timestamp (Customer.io's event time); a click implies an open; opens and clicks
-- count events. A flag is NULL for a channel that has no such metric (in-app reports no deliveries,
-- SMS no opens), never a misleading false. Drafts, attempts, deferrals and subscription events make a
-- delivery and nothing else. The events CTE is filled in by loader/warehouse/views.py: the union of
-- every channel's event tables, each tagged with its channel and metric, in the source's schema.
CREATE VIEW {schema}.message_funnel AS
WITH events AS (
{channel_events}
),
deliveries AS (
    SELECT
        channel,
        delivery_id,
        MAX(user_id) AS user_id,
        MAX(campaign_id) AS campaign_id,
        MAX(broadcast_id) AS broadcast_id,
        MAX(newsletter_id) AS newsletter_id,
        MAX(transactional_message_id) AS transactional_message_id,
        MAX(action_id) AS action_id,
        MIN(event_at) AS first_event_at,
        MIN(CASE WHEN metric = 'sent' THEN event_at END) AS first_sent_at,
        MIN(CASE WHEN metric = 'delivered' THEN event_at END) AS first_delivered_at,
        MIN(CASE WHEN metric IN ('opened', 'clicked') THEN event_at END) AS first_opened_at,
        MIN(CASE WHEN metric = 'clicked' THEN event_at END) AS first_clicked_at,
        MIN(CASE WHEN metric = 'converted' THEN event_at END) AS first_converted_at,
        COUNT(CASE WHEN metric = 'sent' THEN 1 END) > 0 AS has_sent,
        COUNT(CASE WHEN metric = 'delivered' THEN 1 END) > 0 AS has_delivered,
        COUNT(CASE WHEN metric IN ('opened', 'clicked') THEN 1 END) > 0 AS has_opened,
        COUNT(CASE WHEN metric = 'clicked' THEN 1 END) > 0 AS has_clicked,
        COUNT(CASE WHEN metric = 'converted' THEN 1 END) > 0 AS has_converted,
        COUNT(CASE WHEN metric IN ('bounced', 'failed', 'dropped', 'undeliverable') THEN 1 END) > 0 AS has_failed,
        COUNT(CASE WHEN metric = 'spammed' THEN 1 END) > 0 AS has_spammed,
        COUNT(CASE WHEN metric = 'unsubscribed' THEN 1 END) > 0 AS has_unsubscribed,
        COUNT(CASE WHEN metric = 'replied' THEN 1 END) > 0 AS has_replied,
        COUNT(CASE WHEN (metric = 'opened' AND prefetched IS NOT TRUE)
                     OR (metric = 'clicked' AND machine IS NOT TRUE) THEN 1 END) > 0 AS has_human_opened,
        COUNT(CASE WHEN metric = 'clicked' AND machine IS NOT TRUE THEN 1 END) > 0 AS has_human_clicked,
        COUNT(CASE WHEN metric = 'opened' THEN 1 END) AS open_events,
        COUNT(CASE WHEN metric = 'clicked' THEN 1 END) AS clicks
    FROM events
    WHERE delivery_id IS NOT NULL
    GROUP BY channel, delivery_id
)
SELECT
    channel,
    delivery_id,
    user_id,
    campaign_id,
    broadcast_id,
    newsletter_id,
    transactional_message_id,
    action_id,
    first_event_at,
    first_sent_at,
    first_delivered_at,
    CASE WHEN channel IN ('sms', 'webhook', 'slack') THEN NULL ELSE first_opened_at END AS first_opened_at,
    first_clicked_at,
    first_converted_at,
    has_sent AS is_sent,
    CASE WHEN channel IN ('in_app', 'webhook', 'slack') THEN NULL ELSE has_delivered END AS is_delivered,
    CASE WHEN channel IN ('sms', 'webhook', 'slack') THEN NULL ELSE has_opened END AS is_opened,
    has_clicked AS is_clicked,
    CASE WHEN channel IN ('webhook', 'slack') THEN NULL ELSE has_converted END AS is_converted,
    has_failed AS is_failed,
    CASE WHEN channel = 'email' THEN has_spammed END AS is_spammed,
    CASE WHEN channel = 'email' THEN has_unsubscribed END AS is_unsubscribed,
    CASE WHEN channel IN ('sms', 'whatsapp') THEN has_replied END AS is_replied,
    CASE WHEN channel IN ('sms', 'webhook', 'slack') THEN NULL ELSE has_human_opened END AS human_opened,
    has_human_clicked AS human_clicked,
    CASE WHEN channel IN ('sms', 'webhook', 'slack') THEN NULL ELSE open_events END AS opens,
    clicks
FROM deliveries
