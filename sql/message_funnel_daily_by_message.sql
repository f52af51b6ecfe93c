-- message_funnel_daily_by_message: every channel's counts per UTC day and message, for the dashboard's
-- filters (beyond SPEC §8's views). Counts only: they add up across days and messages, rates do not;
-- a count is NULL where its flag is NULL for the channel.
CREATE VIEW {schema}.message_funnel_daily_by_message AS
SELECT
    channel,
    day,
    campaign_id,
    broadcast_id,
    newsletter_id,
    transactional_message_id,
    action_id,
    deliveries,
    sent,
    delivered,
    opened,
    clicked,
    converted,
    failed,
    spammed,
    unsubscribed,
    replied,
    human_opened,
    human_clicked,
    opens,
    clicks
FROM (
    SELECT
        channel,
        CAST((first_event_at AT TIME ZONE 'UTC') AS DATE) AS day,
        campaign_id,
        broadcast_id,
        newsletter_id,
        transactional_message_id,
        action_id,
        COUNT(*) AS deliveries,
        CAST(SUM(CAST(is_sent AS INTEGER)) AS BIGINT) AS sent,
        CAST(SUM(CAST(is_delivered AS INTEGER)) AS BIGINT) AS delivered,
        CAST(SUM(CAST(is_opened AS INTEGER)) AS BIGINT) AS opened,
        CAST(SUM(CAST(is_clicked AS INTEGER)) AS BIGINT) AS clicked,
        CAST(SUM(CAST(is_converted AS INTEGER)) AS BIGINT) AS converted,
        CAST(SUM(CAST(is_failed AS INTEGER)) AS BIGINT) AS failed,
        CAST(SUM(CAST(is_spammed AS INTEGER)) AS BIGINT) AS spammed,
        CAST(SUM(CAST(is_unsubscribed AS INTEGER)) AS BIGINT) AS unsubscribed,
        CAST(SUM(CAST(is_replied AS INTEGER)) AS BIGINT) AS replied,
        CAST(SUM(CAST(human_opened AS INTEGER)) AS BIGINT) AS human_opened,
        CAST(SUM(CAST(human_clicked AS INTEGER)) AS BIGINT) AS human_clicked,
        CAST(SUM(opens) AS BIGINT) AS opens,
        CAST(SUM(clicks) AS BIGINT) AS clicks
    FROM {schema}.message_funnel
    GROUP BY channel, CAST((first_event_at AT TIME ZONE 'UTC') AS DATE), campaign_id, broadcast_id, newsletter_id,
        transactional_message_id, action_id
) counts
