-- message_funnel_by_message: every channel's funnel per message: campaign / broadcast / newsletter /
-- transactional message, and action (SPEC §8).
-- Counts are distinct deliveries (opens and clicks: events). A count is NULL where its flag is NULL for
-- the channel (SUM over NULLs), and so is every rate built on it. Reached = delivered where the channel
-- reports deliveries, otherwise sent; a rate is NULL when its denominator is 0 or NULL.
CREATE VIEW {schema}.message_funnel_by_message AS
SELECT
    channel,
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
    clicks,
    COALESCE(delivered, sent) AS reached,
    CAST(delivered AS DOUBLE PRECISION) / NULLIF(sent, 0) AS delivery_rate,
    CAST(opened AS DOUBLE PRECISION) / NULLIF(COALESCE(delivered, sent), 0) AS open_rate,
    CAST(clicked AS DOUBLE PRECISION) / NULLIF(COALESCE(delivered, sent), 0) AS click_rate,
    CAST(clicked AS DOUBLE PRECISION) / NULLIF(opened, 0) AS click_to_open_rate,
    CAST(converted AS DOUBLE PRECISION) / NULLIF(COALESCE(delivered, sent), 0) AS conversion_rate,
    CAST(failed AS DOUBLE PRECISION) / NULLIF(deliveries, 0) AS failure_rate
FROM (
    SELECT
        channel,
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
    GROUP BY channel, campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id
) counts
