{#- A CTE (no WITH): the company each deal is with (the first of its associated companies) -#}
primary_company AS (
    SELECT deal_id, MIN(company_id) AS company_id
    FROM deal_company
    GROUP BY deal_id
)
