-- canonical stage_history from Odoo's mail tracking of crm_lead.stage_id
{% include "odoo/_stage_history.sql" %}
