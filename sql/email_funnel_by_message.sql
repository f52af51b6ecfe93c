-- email_funnel_by_message: the funnel per message: campaign / broadcast / newsletter / transactional
-- message, and action.
-- Counts are distinct deliveries (opens and clicks: events); a rate is NULL when its denominator is 0.
CREATE VIEW {schema}.email_funnel_by_message AS
SELECT
    campaign_id,
    broadcast_id,
    newsletter_id,
    transactional_message_id,
    action_id,
    sent,
    delivered,
    opened,
    clicked,
    bounced,
    spammed,
    unsubscribed,
    human_opened,
    human_clicked,
    opens,
    clicks,
    CAST(opened AS DOUBLE PRECISION) / NULLIF(delivered, 0) AS open_rate,
    CAST(clicked AS DOUBLE PRECISION) / NULLIF(delivered, 0) AS click_rate,
    CAST(clicked AS DOUBLE PRECISION) / NULLIF(opened, 0) AS click_to_open_rate,
    CAST(bounced AS DOUBLE PRECISION) / NULLIF(sent, 0) AS bounce_rate,
    CAST(unsubscribed AS DOUBLE PRECISION) / NULLIF(delivered, 0) AS unsubscribe_rate
FROM (
    SELECT
        campaign_id,
        broadcast_id,
        newsletter_id,
        transactional_message_id,
        action_id,
        COUNT(CASE WHEN is_sent THEN 1 END) AS sent,
        COUNT(CASE WHEN is_delivered THEN 1 END) AS delivered,
        COUNT(CASE WHEN is_opened THEN 1 END) AS opened,
        COUNT(CASE WHEN is_clicked THEN 1 END) AS clicked,
        COUNT(CASE WHEN is_bounced THEN 1 END) AS bounced,
        COUNT(CASE WHEN is_spammed THEN 1 END) AS spammed,
        COUNT(CASE WHEN is_unsubscribed THEN 1 END) AS unsubscribed,
        COUNT(CASE WHEN human_opened THEN 1 END) AS human_opened,
        COUNT(CASE WHEN human_clicked THEN 1 END) AS human_clicked,
        CAST(SUM(opens) AS BIGINT) AS opens,
        CAST(SUM(clicks) AS BIGINT) AS clicks
    FROM {schema}.email_funnel
    GROUP BY campaign_id, broadcast_id, newsletter_id, transactional_message_id, action_id
) counts
