# Fills a migrated Wagtail database through Django's ORM, the way the site would: users and
# groups, a tree of pages with revisions (published, so Wagtail logs them), documents with tags
# (django-taggit's generic relation: content type + object id), admin log entries (a generic
# relation by text id), redirects, search promotions, and pages in moderation (a workflow state
# and its current task state reference each other). Deterministic.
import datetime
import os
import sys

import django

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry  # noqa: E402
from django.contrib.auth.models import Group, User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from wagtail.actions.delete_page import DeletePageAction  # noqa: E402
from wagtail.contrib.redirects.models import Redirect  # noqa: E402
from wagtail.contrib.search_promotions.models import Query, SearchPromotion  # noqa: E402
from wagtail.documents.models import Document  # noqa: E402
from wagtail.models import Collection, Page  # noqa: E402

editors = Group.objects.create(name="Editors in chief")
users = []
for i in range(12):
    u = User.objects.create_user(f"user{i}", f"user{i}@example.org", "pw", first_name=f"First{i}", last_name=f"Last{i}")
    if i % 3 == 0:
        u.groups.add(editors)
    users.append(u)

root = Page.get_first_root_node()
home = root.add_child(instance=Page(title="Corpus home", slug="corpus-home"))
pages = [home]
for i in range(40):
    parent = pages[i // 4]
    page = parent.add_child(instance=Page(title=f"Page {i}", slug=f"page-{i}", owner=users[i % len(users)]))
    pages.append(page)
for i, page in enumerate(pages):
    revision = page.save_revision(user=users[i % len(users)], log_action=True)
    if i % 3 != 0:
        revision.publish(user=users[(i + 1) % len(users)], skip_permission_checks=True)

collection = Collection.get_first_root_node().add_child(name="Corpus files")
page_type = ContentType.objects.get_for_model(Page)
for i in range(25):
    doc = Document.objects.create(title=f"Document {i}", file=f"documents/doc{i}.pdf", collection=collection, uploaded_by_user=users[i % 5])
    doc.tags.add(f"tag{i % 7}", f"topic{i % 3}")
for i, page in enumerate(pages[:30]):
    LogEntry.objects.create(
        user=users[i % len(users)],
        content_type=page_type,
        object_id=str(page.pk),
        object_repr=page.title,
        action_flag=ADDITION if i % 2 else CHANGE,
        change_message="[]",
        action_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=i),
    )
for i in range(10):
    Redirect.objects.create(old_path=f"/old-{i}", redirect_page=pages[i + 1], site=None)
for i in range(5):
    query = Query.get(f"corpus query {i}")
    SearchPromotion.objects.create(query=query, page=pages[i + 2], sort_order=i, description=f"promoted {i}")
# Moderation workflows: a workflow state and its current task state reference each other.
for i, page in enumerate(pages[5:11]):
    page.get_workflow().start(page, users[i % len(users)])
# A page deleted as an editor would: its log entries stay (Wagtail declares the log's page_id
# without a database constraint, so that the history outlives the page).
DeletePageAction(pages[-1], user=users[0]).execute(skip_permission_checks=True)

# The zoo: multi-table inheritance, a UUID key, PostgreSQL's own types.
import uuid  # noqa: E402
from decimal import Decimal  # noqa: E402

from django.db.backends.postgresql.psycopg_any import DateRange  # noqa: E402
from zoo.models import Animal, Keeper, Place, Restaurant  # noqa: E402

boss = Keeper.objects.create(code=uuid.UUID(int=1), name="boss")
keepers = [Keeper.objects.create(code=uuid.UUID(int=i + 2), name=f"keeper {i}", mentor=boss) for i in range(4)]
places = [Place.objects.create(name=f"place {i}", location=f"10.0.0.{i}" if i % 2 else "::1") for i in range(6)]
for i in range(3):
    Restaurant.objects.create(name=f"restaurant {i}", serves_pizza=i % 2 == 0)
animals = []
for i in range(30):
    animals.append(Animal.objects.create(
        name=f"animal {i}",
        kind="cat" if i % 2 else "dog",
        weight=Decimal(i) / 3,
        age=datetime.timedelta(days=i, seconds=5, microseconds=i) if i % 3 else None,
        photo=bytes([i, 0, 255, 92]) if i % 4 == 0 else None,
        tags=["x", f"t{i}", 'quote " and, comma'] if i % 5 else [],
        stay=DateRange(datetime.date(2024, 1, 1), datetime.date(2024, 1, 2 + i % 20)) if i % 7 else None,
        meta={"i": i, "nested": {"ok": True, "text": "ü\n"}},
        keeper=keepers[i % 4] if i % 5 else None,
        home=places[i] if i < 6 else None,
    ))
for i in range(1, 30):
    animals[i].friends.add(animals[i - 1])
print("filled")
